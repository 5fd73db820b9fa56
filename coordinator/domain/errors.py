"""Errors a user can cause: a stable machine-readable code, an HTTP status, a human sentence;
and the operator's kind, a setting or an argument that cannot be used."""
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
    "overloaded": 503,
    "ledger_not_configured": 501,
}

class WalletError(Exception):
    def __init__(self, code: str, detail: str) -> None:
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
