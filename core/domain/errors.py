"""Errors a user can cause: a stable machine-readable code, an HTTP status, a human sentence;
and the operator's kind, a setting or an argument that cannot be used."""

from __future__ import annotations

from typing import Literal, get_args

from core.domain.limits import (
    AMOUNT_MINOR_DIGITS,
    BATCH_BODY_BYTES_MAX,
    BODY_BYTES_MAX,
    INFLIGHT_MAX,
    kib,
)

# The codes are API: never rename one. A WalletError carries one of ErrorCode; the HTTP layer
# answers with HttpCode itself; a transfer refused for a business reason has one of
# RecordedCode stored with its record (a retry gets it again).
ErrorCode = Literal[
    "validation_error",
    "malformed_request",
    "invalid_amount",
    "same_account",
    "currency_mismatch",
    "unsupported_currency",
    "account_not_found",
    "transfer_not_found",
    "account_exists",
    "insufficient_funds",
    "account_frozen",
    "idempotency_conflict",
    "transfer_aborted",
    "shard_unavailable",
    "unauthorized",
    "forbidden",
    "rate_limited",
    "overloaded",
    "ledger_not_configured",
]
HttpCode = Literal["not_found", "method_not_allowed", "internal_error"]
RecordedCode = Literal[
    "insufficient_funds", "account_not_found", "account_frozen", "currency_mismatch", "transfer_aborted"
]
ERROR_CODES: tuple[ErrorCode, ...] = get_args(ErrorCode)
RECORDED_CODES: tuple[RecordedCode, ...] = get_args(RecordedCode)

# code -> HTTP status. 400 and 422 are for what the OpenAPI document states (a request that
# fits it never gets them); what it cannot state (two fields naming one account, the state of
# the accounts or of the transaction id) is 409.
ERROR_STATUS: dict[ErrorCode, int] = {
    "validation_error": 422,
    "malformed_request": 400,
    "invalid_amount": 422,
    "same_account": 409,
    "currency_mismatch": 409,
    "unsupported_currency": 422,
    "account_not_found": 404,
    "transfer_not_found": 404,
    "account_exists": 409,
    "insufficient_funds": 409,
    "account_frozen": 409,
    "idempotency_conflict": 409,
    "transfer_aborted": 409,
    "shard_unavailable": 503,
    "unauthorized": 401,
    "forbidden": 403,
    "rate_limited": 429,
    "overloaded": 503,
    "ledger_not_configured": 501,
}
# code -> what it means: GET /problems/{code} answers with it (a problem's `type` points there),
# and the docs' table of codes (docs/api.md) is checked against it.
ERROR_MEANINGS: dict[ErrorCode | HttpCode, str] = {
    "validation_error": "missing or unknown field, bad account id, bad UUID, bad mode, bad query parameter",
    "malformed_request": f"body not a JSON object, or over its size limit ({kib(BODY_BYTES_MAX)}; "
    f"{kib(BATCH_BODY_BYTES_MAX)} for a batch)",
    "invalid_amount": "not a positive decimal string, more decimals than the currency has, or over "
    f"10^{AMOUNT_MINOR_DIGITS} minor units",
    "same_account": "from and to are one account",
    "currency_mismatch": "the accounts and the request do not share one currency (no FX)",
    "unsupported_currency": "not an ISO 4217 code this service knows",
    "account_not_found": "an account does not exist",
    "transfer_not_found": "no transfer has that transaction id",
    "account_exists": "the account id is taken with other details",
    "insufficient_funds": "the available balance is below the amount",
    "account_frozen": "either account is frozen",
    "idempotency_conflict": "the transaction id was used for a different request",
    "transfer_aborted": "a TC/C or Saga transfer was cancelled by recovery or by an out-of-order Cancel",
    "shard_unavailable": "a shard did not answer; retry with the same transaction id to learn the outcome",
    "unauthorized": "no Authorization: Bearer token, or one badly signed, expired, or without a known scope",
    "forbidden": "the token's scope or owner does not allow it",
    "rate_limited": "the token spent its burst; Retry-After says when to come back",
    "overloaded": f"this coordinator has {INFLIGHT_MAX:,} transfers in flight; Retry-After says when to come back "
    "(same transaction id)",
    "ledger_not_configured": "balance at a moment or history asked of a deployment whose topology names no ledger",
    "not_found": "no such path",
    "method_not_allowed": "the path does not take this method; Allow lists those it does",
    "internal_error": "the server failed; the request may be retried with the same transaction id",
}
# Codes the HTTP layer answers with itself, beside the ones a WalletError carries.
HTTP_CODES: dict[HttpCode, int] = {"not_found": 404, "method_not_allowed": 405, "internal_error": 500}
assert set(ERROR_STATUS) == set(ERROR_CODES) and set(HTTP_CODES) == set(get_args(HttpCode)), "one status a code"
assert set(ERROR_MEANINGS) == set(ERROR_STATUS) | set(HTTP_CODES), "every code has its meaning"
assert set(RECORDED_CODES) <= set(ERROR_CODES), "a recorded code is an error code"


class WalletError(Exception):
    def __init__(self, code: ErrorCode, detail: str) -> None:
        assert code in ERROR_STATUS, f"unknown error code {code!r}: add it to ERROR_STATUS"
        super().__init__(detail)
        self.code = code
        self.detail = detail

    @property
    def status(self) -> int:
        return ERROR_STATUS[self.code]


class ConfigurationError(Exception):
    """A setting, an argument or a file an operator gave that cannot be used. Its message is
    one line naming what is wrong and what is allowed: `wallet` prints it and exits 2, and
    the service refuses to start with it. Never an assert: those vanish under python -O."""
