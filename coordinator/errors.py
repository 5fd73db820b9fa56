"""Errors a user can cause: a stable machine-readable code, an HTTP status, a human sentence."""
from __future__ import annotations

# code -> HTTP status. The codes are API: never rename one.
ERROR_STATUS: dict[str, int] = {
    "validation_error": 422,
    "malformed_request": 400,
    "invalid_amount": 422,
    "same_account": 422,
    "currency_mismatch": 422,
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
}

# Business outcomes that are recorded against the transaction id: a retry gets the same answer.
RECORDED_FAILURES = frozenset(
    {"insufficient_funds", "account_not_found", "account_frozen", "currency_mismatch", "transfer_aborted"}
)


class WalletError(Exception):
    def __init__(self, code: str, detail: str) -> None:
        assert code in ERROR_STATUS, f"unknown error code {code!r}: add it to ERROR_STATUS"
        super().__init__(detail)
        self.code = code
        self.detail = detail

    @property
    def status(self) -> int:
        return ERROR_STATUS[self.code]
