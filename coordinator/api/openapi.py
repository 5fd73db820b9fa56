"""The API's OpenAPI 3.0 document, served at /openapi.json and fuzzed by the tests
(schemathesis): every response the app gives must fit what is written here."""
from __future__ import annotations

from typing import Any

from coordinator.api.push import WAIT_S_MAX
from coordinator.domain.validation import ACCOUNT_ID_PATTERN, OWNER_LENGTH_MAX
from coordinator.domain.money import AMOUNT_TEXT_LENGTH_MAX, CURRENCY_DECIMALS
from coordinator.domain.transfers import MODES
from ledger.store import PAGE_SIZE_MAX

AMOUNT = {"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?$", "maxLength": AMOUNT_TEXT_LENGTH_MAX,
          "example": "12.34"}
SIGNED_AMOUNT = {"type": "string", "pattern": r"^-?[0-9]+(\.[0-9]+)?$"}
ACCOUNT_ID = {"type": "string", "pattern": ACCOUNT_ID_PATTERN.pattern, "maxLength": 64, "example": "alice"}
TRANSACTION_ID = {"type": "string", "format": "uuid", "example": "6f1d3c2b-8a4e-4f0b-b7d5-1e9c0a2f3b44"}
CURRENCY = {"type": "string", "enum": sorted(CURRENCY_DECIMALS), "example": "USD"}
MODE = {"type": "string", "enum": list(MODES)}


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


SCHEMAS: dict[str, Any] = {
    "Problem": {
        "type": "object", "required": ["type", "title", "status", "code", "detail"],
        "properties": {"type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"},
                       "code": {"type": "string"}, "detail": {"type": "string"}},
    },
    "NewAccount": {
        "type": "object", "additionalProperties": False, "required": ["account_id", "owner", "currency"],
        "properties": {"account_id": ACCOUNT_ID, "owner": {"type": "string", "minLength": 1,
                                                           "maxLength": OWNER_LENGTH_MAX, "example": "alice"},
                       "currency": CURRENCY},
    },
    "Account": {
        "type": "object", "required": ["account_id", "owner", "currency", "balance", "available", "reserved", "status"],
        "properties": {"account_id": {"type": "string"}, "owner": {"type": "string"}, "currency": {"type": "string"},
                       "balance": AMOUNT, "available": AMOUNT, "reserved": AMOUNT,
                       "status": {"type": "string", "enum": ["active", "frozen"]}},
    },
    "Deposit": {
        "type": "object", "additionalProperties": False, "required": ["amount", "transaction_id"],
        "properties": {"amount": AMOUNT,
                       "transaction_id": {**TRANSACTION_ID, "example": "9d0c4f7e-2b1a-4e8d-8c3f-5a6b7c8d9e01"}},
    },
    "TransferRequest": {
        "type": "object", "additionalProperties": False,
        "required": ["from_account", "to_account", "amount", "currency", "transaction_id"],
        "properties": {"from_account": ACCOUNT_ID, "to_account": {**ACCOUNT_ID, "example": "bob"}, "amount": AMOUNT,
                       "currency": CURRENCY,
                       "transaction_id": TRANSACTION_ID, "mode": MODE},
    },
    "Transfer": {
        "type": "object", "required": ["status", "transaction_id", "kind", "to_account", "amount", "currency", "mode",
                                       "protocol", "phase"],
        "properties": {"status": {"type": "string", "enum": ["success", "failed"]},
                       "transaction_id": {"type": "string", "format": "uuid"},
                       "kind": {"type": "string", "enum": ["transfer", "deposit"]},
                       "from_account": {"type": "string", "nullable": True}, "to_account": {"type": "string"},
                       "amount": AMOUNT, "currency": {"type": "string"}, "mode": {"type": "string"},
                       "protocol": {"type": "string", "enum": ["local", "2pc", "tcc", "saga"]},
                       "phase": {"type": "string"}, "error_code": {"type": "string"},
                       "created_at": {"type": "string"}},
    },
    "Pending": {
        "type": "object", "required": ["transaction_id", "status", "phase"],
        "properties": {"transaction_id": {"type": "string"}, "status": {"type": "string", "enum": ["pending"]},
                       "phase": {"type": "string", "enum": ["preparing", "in-doubt", "trying", "debited",
                                                            "confirming", "cancelling"]}},
    },
    "BatchRequest": {
        "type": "object", "additionalProperties": False, "required": ["transfers"],
        "properties": {"transfers": {"type": "array", "minItems": 1, "maxItems": 1000,
                                     "items": ref("TransferRequest")}},
    },
    "BatchResults": {
        "type": "object", "required": ["results"],
        "properties": {"results": {"type": "array", "items": {
            "type": "object", "required": ["status", "transaction_id"],
            "properties": {"status": {"type": "string", "enum": ["success", "failed"]},
                           "transaction_id": {"type": "string", "nullable": True}, "code": {"type": "string"},
                           "detail": {"type": "string"}}}}},
    },
    "BalanceAt": {
        "type": "object", "required": ["account_id", "currency", "at", "balance", "reserved", "available", "version"],
        "properties": {"account_id": {"type": "string"}, "currency": {"type": "string"}, "at": {"type": "string"},
                       "balance": SIGNED_AMOUNT, "reserved": SIGNED_AMOUNT, "available": SIGNED_AMOUNT,
                       "version": {"type": "integer", "minimum": 0}},
    },
    "History": {
        "type": "object", "required": ["account_id", "items", "next_after_version"],
        "properties": {"account_id": {"type": "string"},
                       "next_after_version": {"type": "integer", "nullable": True},
                       "items": {"type": "array", "items": {
                           "type": "object",
                           "required": ["version", "transaction_id", "kind", "amount", "reserved_change",
                                        "balance_after", "at"],
                           "properties": {"version": {"type": "integer"}, "transaction_id": {"type": "string"},
                                          "kind": {"type": "string"}, "amount": SIGNED_AMOUNT,
                                          "reserved_change": SIGNED_AMOUNT, "balance_after": SIGNED_AMOUNT,
                                          "at": {"type": "string"}}}}},
    },
    "Event": {  # one server-sent event; `data` is JSON: Pending for phase, Transfer for final
        "type": "object", "required": ["data"],
        "properties": {"event": {"type": "string", "enum": ["phase", "final", "timeout", "error"]},
                       "data": {"type": "string"}, "id": {"type": "string"}, "retry": {"type": "integer"}},
    },
    "Health": {"type": "object", "required": ["status"], "properties": {"status": {"type": "string"}}},
    "Ready": {
        "type": "object", "required": ["status", "checks"],
        "properties": {"status": {"type": "string", "enum": ["ready"]}, "checks": {"type": "object"},
                       "topology_version": {"type": "integer"}},
    },
}


def json_body(schema: dict[str, Any], example: dict[str, Any] | None = None) -> dict[str, Any]:
    media: dict[str, Any] = {"schema": schema}
    if example is not None:
        media["example"] = example
    return {"required": True, "content": {"application/json": media}}


TRANSFER_EXAMPLE = {"from_account": "alice", "to_account": "bob", "amount": "12.50", "currency": "USD",
                    "transaction_id": "6f1d3c2b-8a4e-4f0b-b7d5-1e9c0a2f3b44", "mode": "2pc"}


def ok(description: str, schema: dict[str, Any], media: str = "application/json") -> dict[str, Any]:
    return {"description": description, "content": {media: {"schema": schema}}}


PROBLEM = {"application/problem+json": {"schema": ref("Problem")}}


def problems(*statuses: int) -> dict[str, Any]:
    """The error answers an operation documents; `default` covers the rest (404 for a path
    the router does not know, 503 while a shard is down), every one problem+json."""
    words = {400: "malformed request", 401: "no token or a bad one", 403: "not allowed for this token",
             404: "not found", 409: "conflict", 422: "invalid input", 429: "rate limited (see Retry-After)",
             501: "this deployment has no event ledger", 503: "a shard did not answer, or this coordinator is overloaded"}
    answers = {str(status): {"description": words[status], "content": PROBLEM} for status in statuses}
    answers["default"] = {"description": "an error, as problem+json with a stable code", "content": PROBLEM}
    return answers


SECURED = (401, 403, 429)


def path_parameter(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": schema}


def query_parameter(name: str, schema: dict[str, Any], required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": required, "schema": schema}


ACCOUNT_PATH = path_parameter("account_id", ACCOUNT_ID)
TRANSACTION_PATH = path_parameter("transaction_id", TRANSACTION_ID)


def document() -> dict[str, Any]:
    return {
        "openapi": "3.0.3",
        "info": {"title": "wallet", "version": "1", "description": "Wallet-to-wallet transfers over sharded "
                 "PostgreSQL. Amounts are decimal strings; every error is application/problem+json."},
        "components": {"schemas": SCHEMAS, "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                                                          "bearerFormat": "JWT"}}},
        "security": [{"bearer": []}],
        "paths": {
            "/healthz": {"get": {"security": [], "summary": "the process is up",
                                 "responses": {"200": ok("up", ref("Health"))}}},
            "/readyz": {"get": {"security": [], "summary": "every shard reachable and migrated, topology loaded",
                                "responses": {"200": ok("ready", ref("Ready")), **problems(503)}}},
            "/v1/accounts": {"post": {
                "summary": "open an account (admin)", "requestBody": json_body(ref("NewAccount")),
                "responses": {"201": ok("created", ref("Account")), "200": ok("already there, same", ref("Account")),
                              **problems(400, 409, 422, *SECURED)}}},
            "/v1/accounts/{account_id}": {"get": {
                "summary": "an account (its owner, or admin)", "parameters": [ACCOUNT_PATH],
                "responses": {"200": ok("the account", ref("Account")), **problems(404, 422, *SECURED)}}},
            "/v1/accounts/{account_id}/deposits": {"post": {
                "summary": "money enters from outside (admin); idempotent", "parameters": [ACCOUNT_PATH],
                "requestBody": json_body(ref("Deposit")),
                "responses": {"200": ok("deposited", ref("Transfer")), **problems(400, 404, 409, 422, *SECURED)}}},
            "/v1/accounts/{account_id}/balance": {"get": {
                "summary": "the balance at a moment, from the ledger",
                "parameters": [ACCOUNT_PATH, query_parameter("at", {"type": "string", "format": "date-time"}, True)],
                "responses": {"200": ok("the balance then", ref("BalanceAt")), **problems(404, 422, 501, *SECURED)}}},
            "/v1/accounts/{account_id}/transactions": {"get": {
                "summary": "the account's history from the ledger",
                "parameters": [ACCOUNT_PATH,
                               query_parameter("after_version", {"type": "integer", "minimum": 0}),
                               query_parameter("limit", {"type": "integer", "minimum": 1, "maximum": PAGE_SIZE_MAX})],
                "responses": {"200": ok("a page", ref("History")), **problems(404, 422, 501, *SECURED)}}},
            "/v1/wallet/balance_transfer": {"post": {
                "summary": "move money out of an account you own; idempotent on transaction_id",
                "requestBody": json_body(ref("TransferRequest"), TRANSFER_EXAMPLE),
                "responses": {"200": ok("moved", ref("Transfer")), **problems(400, 404, 409, 422, *SECURED)}}},
            "/v1/transfers:batch": {"post": {
                "summary": "up to 1,000 transfers; one result each, in order",
                "requestBody": json_body(ref("BatchRequest"), {"transfers": [
                    {**TRANSFER_EXAMPLE, "transaction_id": "0b9c2a1e-5f7d-4c1a-9e3b-6d2f8a7c4e10", "mode": "tcc"},
                    {**TRANSFER_EXAMPLE, "from_account": "bob", "to_account": "alice", "mode": "saga",
                     "transaction_id": "3f2b8c1e-0d4a-4b7e-9a51-2c7d9e0f1a23"}]}),
                "responses": {"200": ok("one result per item", ref("BatchResults")),
                              **problems(400, 422, *SECURED)}}},
            "/v1/transfers/{transaction_id}": {"get": {
                "summary": "a transfer's outcome; ?wait=S answers once it is final (long poll)",
                "parameters": [TRANSACTION_PATH,
                               query_parameter("wait", {"type": "integer", "minimum": 0, "maximum": WAIT_S_MAX})],
                "responses": {"200": ok("final", ref("Transfer")), "202": ok("not final yet", ref("Pending")),
                              **problems(404, 422, *SECURED)}}},
            "/v1/transfers/{transaction_id}/events": {"get": {
                "summary": "server-sent events: `phase` while pending, then `final`",
                "parameters": [TRANSACTION_PATH],
                "responses": {"200": ok("an event stream", ref("Event"), "text/event-stream"),
                              **problems(404, 422, *SECURED)}}},
            "/metrics": {"get": {
                "summary": "Prometheus metrics (admin)",
                "responses": {"200": ok("text exposition format", {"type": "string"},
                                        "text/plain"), **problems(*SECURED)}}},
        },
    }
