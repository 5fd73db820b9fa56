"""The API's OpenAPI 3.1 document, served at /openapi.json: the operations table, with every
schema generated from api/schemas.py (nothing here describes a field). The app builds its
routes from the same table (api/app.py), and schemathesis holds the running app to it
(tests/test_fuzz.py): every check, stateful phase included, walking the links below from
opening an account through a deposit and a transfer to the reads."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgspec

from coordinator.api import schemas
from core.domain.errors import ERROR_STATUS

REF = "#/components/schemas/{name}"
PROBLEM_WORDS = {
    400: "malformed request",
    401: "no token or a bad one",
    403: "not allowed for this token",
    404: "not found",
    409: "conflict with the state of an account or of the transaction id",
    422: "invalid input (the field and the rule are named in `detail`)",
    429: "rate limited (see Retry-After)",
    501: "this deployment has no event ledger",
    503: "a shard did not answer, or this coordinator is overloaded (see Retry-After): retry with "
    "the same transaction_id",
}
SECURED = (401, 403, 429)


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    operation_id: str  # the handler in api/app.py and the client's method (wallet_client)
    summary: str
    request: Any = None  # the body's schema
    parameters: tuple[Any, ...] = ()  # Structs of path and query parameters
    responses: dict[int, Any] = field(default_factory=dict)  # status -> schema (None: no body)
    problems: tuple[int, ...] = ()
    access: str = "user"  # user | admin | public
    links: dict[int, dict[str, dict[str, Any]]] = field(default_factory=dict)
    headers: dict[int, dict[str, str]] = field(default_factory=dict)  # status -> header -> description
    examples: dict[str, Any] = field(default_factory=dict)
    media: str = "application/json"
    description: str = ""


EXAMPLE_ID = "6f1d3c2b-8a4e-4f0b-b7d5-1e9c0a2f3b44"
# A stateful walk: open an account, open a counterparty in its currency, fund it, move money
# to the counterparty, read what happened (schemathesis follows these).
COUNTERPARTY = "{$response.body#/currency}-counterparty"
ACCOUNT_LINKS = {
    "ReadAccount": {"operationId": "getAccount", "parameters": {"path.account_id": "$response.body#/account_id"}},
    "Deposit": {
        "operationId": "deposit",
        "parameters": {"path.account_id": "$response.body#/account_id"},
        "requestBody": {"currency": "$response.body#/currency", "amount": "100"},
    },
    "OpenCounterparty": {
        "operationId": "createAccount",
        "requestBody": {"account_id": COUNTERPARTY, "owner": "counterparty", "currency": "$response.body#/currency"},
    },
}
MOVED_LINKS = {
    "ReadTransfer": {
        "operationId": "getTransfer",
        "parameters": {"path.transaction_id": "$response.body#/transaction_id"},
    },
    "FollowTransfer": {
        "operationId": "transferEvents",
        "parameters": {"path.transaction_id": "$response.body#/transaction_id"},
    },
    "BalanceThen": {
        "operationId": "getBalanceAt",
        "parameters": {"path.account_id": "$response.body#/to_account", "query.at": "$response.body#/created_at"},
    },
    "History": {"operationId": "getHistory", "parameters": {"path.account_id": "$response.body#/to_account"}},
}
DEPOSIT_LINKS = {
    **MOVED_LINKS,
    "OpenCounterparty": {
        "operationId": "createAccount",
        "requestBody": {"account_id": COUNTERPARTY, "owner": "counterparty", "currency": "$response.body#/currency"},
    },
    "PayCounterparty": {
        "operationId": "transfer",
        "requestBody": {
            "from_account": "$response.body#/to_account",
            "to_account": COUNTERPARTY,
            "currency": "$response.body#/currency",
            "amount": "1",
        },
    },
}
TRANSFER_LINKS = {
    **MOVED_LINKS,
    "PayBack": {
        "operationId": "transfer",
        "requestBody": {
            "from_account": "$response.body#/to_account",
            "to_account": "$response.body#/from_account",
            "currency": "$response.body#/currency",
            "amount": "1",
        },
    },
}

OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "post",
        "/v1/accounts",
        "createAccount",
        "open an account (admin); the same again is a no-op",
        request=schemas.NewAccount,
        responses={201: schemas.Account, 200: schemas.Account},
        problems=(400, 409, 422, *SECURED),
        access="admin",
        links={201: ACCOUNT_LINKS, 200: ACCOUNT_LINKS},
        headers={201: {"Location": "the account"}},
        examples={
            "alice": {"account_id": "alice", "owner": "alice", "currency": "USD"},
            "bob": {"account_id": "bob", "owner": "bob", "currency": "USD"},
        },
    ),
    Operation(
        "get",
        "/v1/accounts/{account_id}",
        "getAccount",
        "an account (its owner, or admin)",
        parameters=(schemas.AccountPath,),
        responses={200: schemas.Account, 304: None},
        problems=(404, 422, *SECURED),
        headers={200: {"ETag": "changes whenever the account does"}},
        description="With If-None-Match naming the current ETag, 304 and no body.",
    ),
    Operation(
        "post",
        "/v1/accounts/{account_id}/deposits",
        "deposit",
        "money enters from outside (admin); idempotent on transaction_id",
        request=schemas.Deposit,
        parameters=(schemas.AccountPath,),
        responses={200: schemas.Transfer},
        problems=(400, 404, 409, 422, *SECURED),
        access="admin",
        links={200: DEPOSIT_LINKS},
        examples={
            "hundred": {"amount": "100.00", "currency": "USD", "transaction_id": "9d0c4f7e-2b1a-4e8d-8c3f-5a6b7c8d9e01"}
        },
        description="The currency must be the account's (409 currency_mismatch otherwise).",
    ),
    Operation(
        "get",
        "/v1/accounts/{account_id}/balance",
        "getBalanceAt",
        "the balance at a moment, from the ledger",
        parameters=(schemas.AccountPath, schemas.BalanceQuery),
        responses={200: schemas.BalanceAt},
        problems=(404, 422, 501, *SECURED),
    ),
    Operation(
        "get",
        "/v1/accounts/{account_id}/transactions",
        "getHistory",
        "the account's history from the ledger",
        parameters=(schemas.AccountPath, schemas.HistoryQuery),
        responses={200: schemas.History},
        problems=(404, 422, 501, *SECURED),
    ),
    Operation(
        "post",
        "/v1/wallet/balance_transfer",
        "transfer",
        "move money out of an account you own; idempotent on transaction_id",
        request=schemas.TransferRequest,
        responses={200: schemas.Transfer},
        problems=(400, 404, 409, 422, *SECURED),
        links={200: TRANSFER_LINKS},
        examples={
            "alice to bob": {
                "from_account": "alice",
                "to_account": "bob",
                "amount": "12.50",
                "currency": "USD",
                "transaction_id": EXAMPLE_ID,
                "mode": "2pc",
            }
        },
        description="A recorded refusal (insufficient_funds, ...) is a problem whose type is its code; a "
        "retry with the same id gets the same answer.",
    ),
    Operation(
        "post",
        "/v1/transfers:batch",
        "transferBatch",
        "up to 1,000 transfers; one result each, in order; a bad item fails alone",
        request=schemas.BatchRequest,
        responses={200: schemas.BatchResults},
        problems=(400, 422, *SECURED),
        description="Each item is checked on its own as the body of POST /v1/wallet/balance_transfer; a bad "
        "one gets its code in its result, and the others go on.",
    ),
    Operation(
        "get",
        "/v1/transfers/{transaction_id}",
        "getTransfer",
        "a transfer's outcome; ?wait=S answers once it is final (long poll)",
        parameters=(schemas.TransferPath, schemas.WaitQuery),
        responses={200: schemas.Transfer, 202: schemas.Pending},
        problems=(404, 422, *SECURED),
    ),
    Operation(
        "get",
        "/v1/transfers/{transaction_id}/events",
        "transferEvents",
        "server-sent events: `phase` while pending, then `final`",
        parameters=(schemas.TransferPath,),
        responses={200: schemas.Event},
        problems=(404, 422, *SECURED),
        media="text/event-stream",
    ),
    Operation("get", "/healthz", "health", "the process is up", responses={200: schemas.Health}, access="public"),
    Operation(
        "get",
        "/readyz",
        "ready",
        "every shard and the ledger reachable and migrated, topology loaded",
        responses={200: schemas.Ready},
        problems=(503,),
        access="public",
    ),
    Operation(
        "get",
        "/metrics",
        "metrics",
        "Prometheus metrics (admin)",
        responses={200: str},
        problems=SECURED,
        access="admin",
        media="text/plain",
    ),
    Operation(
        "get",
        "/problems/{code}",
        "problemType",
        "what a problem code means (a problem's `type`)",
        parameters=(schemas.ProblemPath,),
        responses={200: schemas.ProblemType},
        problems=(404,),
        access="public",
    ),
)


def components() -> tuple[dict[Any, Any], dict[str, Any]]:
    """({schema type: its JSON Schema or $ref}, the components) for every schema of the table."""
    types = sorted(
        {t for op in OPERATIONS for t in (op.request, *op.responses.values(), *op.parameters) if t not in (None, str)}
        | {schemas.Problem},
        key=repr,
    )
    generated, found = msgspec.json.schema_components(types, ref_template=REF)
    return {kind: schema for kind, schema in zip(types, generated, strict=True)}, found


def parameters_of(operation: Operation, found: dict[str, Any]) -> list[dict[str, Any]]:
    listed = []
    for struct in operation.parameters:
        schema = found[struct.__name__]
        where = "path" if struct.__name__.endswith("Path") else "query"
        for name, property_schema in schema["properties"].items():
            listed.append(
                {"name": name, "in": where, "required": name in schema.get("required", ()), "schema": property_schema}
            )
    if operation.operation_id == "getAccount":
        listed.append({"name": "If-None-Match", "in": "header", "required": False, "schema": {"type": "string"}})
    return listed


def problems(statuses: tuple[int, ...]) -> dict[str, Any]:
    """The error answers an operation documents; `default` covers the rest (404 for a path
    the router does not know, 405 with Allow, 503 while a shard is down), all problem+json."""
    content = {"application/problem+json": {"schema": {"$ref": REF.format(name="Problem")}}}
    answers: dict[str, Any] = {}
    for status in statuses:
        answers[str(status)] = {"description": PROBLEM_WORDS[status], "content": content}
        if status in (429, 503):
            answers[str(status)]["headers"] = {
                "Retry-After": {"description": "seconds to wait", "schema": {"type": "string"}}
            }
        if status == 401:
            answers[str(status)]["headers"] = {"WWW-Authenticate": {"required": True, "schema": {"type": "string"}}}
    answers["default"] = {"description": "an error, as problem+json with a stable code", "content": content}
    return answers


def document() -> dict[str, Any]:
    refs, found = components()
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        responses: dict[str, Any] = {}
        for status, schema in op.responses.items():
            answer: dict[str, Any] = {
                "description": {200: "ok", 201: "created", 202: "not final yet", 304: "not modified"}.get(status, "ok")
            }
            if schema is str:
                answer["content"] = {op.media: {"schema": {"type": "string"}}}
            elif schema is not None:
                answer["content"] = {op.media: {"schema": refs[schema]}}
            if status in op.headers:
                answer["headers"] = {
                    name: {"description": words, "required": True, "schema": {"type": "string"}}
                    for name, words in op.headers[status].items()
                }
            if status in op.links:
                answer["links"] = op.links[status]
            responses[str(status)] = answer
        responses.update(problems(op.problems))
        operation: dict[str, Any] = {"operationId": op.operation_id, "summary": op.summary, "responses": responses}
        if op.description:
            operation["description"] = op.description
        if op.access == "public":
            operation["security"] = []
        listed = parameters_of(op, found)
        if listed:
            operation["parameters"] = listed
        if op.request is not None:
            media: dict[str, Any] = {"schema": refs[op.request]}
            if op.examples:
                media["examples"] = {name: {"value": value} for name, value in op.examples.items()}
            operation["requestBody"] = {"required": True, "content": {"application/json": media}}
        paths.setdefault(op.path, {})[op.method] = operation
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "wallet",
            "version": "1",
            "description": "Wallet-to-wallet transfers over sharded PostgreSQL. Amounts are decimal strings in "
            "the currency's precision; every error is application/problem+json with a stable "
            "code, whose meaning GET /problems/{code} tells.",
        },
        "components": {
            "schemas": found,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
        },
        "security": [{"bearer": []}],
        "paths": paths,
    }


def error_codes() -> dict[str, int]:
    """Every problem code and its status (docs/api.md's table is checked against this)."""
    return {code: status for code, status in ERROR_STATUS.items()}
