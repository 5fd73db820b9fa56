"""Turning untrusted input into domain values, with the error a user can act on."""
from __future__ import annotations

import re
from datetime import datetime
from uuid import UUID

from coordinator.domain.accounts import Account
from coordinator.domain.errors import WalletError
from coordinator.domain.money import check_currency, parse_amount
from coordinator.domain.transfers import MODES, Transfer

ACCOUNT_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}\Z")  # \Z: "$" would let a trailing newline in
OWNER_LENGTH_MAX = 128


def check_account_id(value: object, field: str = "account_id") -> str:
    if not isinstance(value, str) or not ACCOUNT_ID_PATTERN.match(value):
        raise WalletError(
            "validation_error",
            f"{field} must be 1-64 characters of letters, digits, '_', '.', ':' or '-', starting with a letter or digit",
        )
    return value


def check_owner(value: object) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > OWNER_LENGTH_MAX or not value.isprintable():
        raise WalletError("validation_error", f"owner must be 1-{OWNER_LENGTH_MAX} printable characters")
    return value


def check_transaction_id(value: object) -> UUID:
    if isinstance(value, UUID):
        return value
    if not isinstance(value, str) or len(value) != 36:
        raise WalletError("validation_error", "transaction_id must be a UUID such as 3f2b8c1e-0d4a-4b7e-9a51-2c7d9e0f1a23")
    try:
        return UUID(value)
    except ValueError:
        raise WalletError("validation_error", "transaction_id must be a UUID such as 3f2b8c1e-0d4a-4b7e-9a51-2c7d9e0f1a23") from None


def check_mode(value: object, default: str) -> str:
    if value is None:
        return default
    if value not in MODES:
        raise WalletError("validation_error", f"mode must be one of {list(MODES)}")
    return value


def check_moment(value: object, field: str = "at") -> datetime:
    """An ISO 8601 time with a timezone, e.g. 2026-11-23T12:00:00Z."""
    example = "an ISO 8601 time with timezone such as 2026-11-23T12:00:00Z"
    if not isinstance(value, str):
        raise WalletError("validation_error", f"{field} must be {example}")
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise WalletError("validation_error", f"{field} must be {example}, got {value!r}") from None
    if moment.tzinfo is None:
        raise WalletError("validation_error", f"{field} must carry a timezone: {example}")
    return moment


def transfer_request(from_account: object, to_account: object, amount: object, currency: object,
                     transaction_id: object, mode: object, default_mode: str) -> Transfer:
    """A transfer between two accounts from untrusted fields, or the WalletError to answer."""
    sender = check_account_id(from_account, "from_account")
    receiver = check_account_id(to_account, "to_account")
    checked_currency = check_currency(currency)
    minor = parse_amount(amount, checked_currency)
    transaction = check_transaction_id(transaction_id)
    chosen_mode = check_mode(mode, default_mode)
    if sender == receiver:
        raise WalletError("same_account", "from_account and to_account must differ")
    return Transfer(transaction, "transfer", sender, receiver, minor, checked_currency, chosen_mode)


def deposit_request(account: Account, amount: object, transaction_id: object) -> Transfer:
    """Money entering `account` from outside: its currency, one shard, no cross-shard mode."""
    return Transfer(check_transaction_id(transaction_id), "deposit", None, account.account_id,
                    parse_amount(amount, account.currency), account.currency, "local")
