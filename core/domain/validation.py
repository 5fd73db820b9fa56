"""Turning untrusted input into domain values, with the error a user can act on.

Each rule is written once, as a regular expression both dialects read alike: the server
checks it with `fullmatch` (so `$` cannot let a trailing newline in), and the OpenAPI
document states the same text as the field's `pattern` (ECMA-262, anchored by `^...$`).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from uuid import UUID

from core.domain.errors import WalletError
from core.domain.money import check_currency, parse_amount
from core.domain.transfers import MODES, Mode, Transfer

ACCOUNT_ID_LENGTH_MAX = 64
ACCOUNT_ID_RULE = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"
OWNER_LENGTH_MAX = 128
# An owner is a label: 1-128 characters, no control character (C0, DEL, C1), not only spaces.
OWNER_RULE = r"^[^\x00-\x1f\x7f-\x9f]*[^ \x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
# RFC 4122's text form, either case.
UUID_RULE = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
# RFC 3339 date-time (what OpenAPI's `format: date-time` means).
# [0-9], never \d: Python's \d also matches other scripts' digits, ECMA-262's does not.
MOMENT_RULE = (
    r"^([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})(\.[0-9]+)?"
    r"([Zz]|[+-]([0-9]{2}):([0-9]{2}))$"
)

ACCOUNT_ID_PATTERN = re.compile(ACCOUNT_ID_RULE)
OWNER_PATTERN = re.compile(OWNER_RULE)
UUID_PATTERN = re.compile(UUID_RULE)
MOMENT_PATTERN = re.compile(MOMENT_RULE)
UUID_EXAMPLE = "3f2b8c1e-0d4a-4b7e-9a51-2c7d9e0f1a23"


def check_account_id(value: object, field: str = "account_id") -> str:
    if not isinstance(value, str) or not ACCOUNT_ID_PATTERN.fullmatch(value):
        raise WalletError(
            "validation_error",
            f"{field} must be 1-64 characters of letters, digits, '_', '.', ':' or '-', "
            "starting with a letter or digit",
        )
    return value


def check_owner(value: object) -> str:
    if not isinstance(value, str) or len(value) > OWNER_LENGTH_MAX or not OWNER_PATTERN.fullmatch(value):
        raise WalletError(
            "validation_error", f"owner must be 1-{OWNER_LENGTH_MAX} characters, no control characters, not only spaces"
        )
    return value


def check_transaction_id(value: object, field: str = "transaction_id") -> str:
    """The UUID in its canonical text (lower case): how every layer carries a transaction id."""
    if isinstance(value, UUID):
        return str(value)
    if not isinstance(value, str) or not UUID_PATTERN.fullmatch(value):
        raise WalletError("validation_error", f"{field} must be a UUID such as {UUID_EXAMPLE}")
    return value.lower()


_MODE_OF: dict[object, Mode] = {mode: mode for mode in MODES}


def check_mode(value: object, default: Mode) -> Mode:
    if value is None:
        return default
    mode = _MODE_OF.get(value) if isinstance(value, str) else None
    if mode is None:
        raise WalletError("validation_error", f"mode must be one of {list(MODES)}")
    return mode


def check_moment(value: object, field: str = "at") -> datetime:
    """An RFC 3339 time with its offset, e.g. 2026-11-23T12:00:00Z. Finer than a microsecond is
    cut to one; a leap second (:60) is the last microsecond of its minute; moments before or
    after what a datetime holds are its first and last (no event lies beyond either)."""
    example = "an RFC 3339 time with its offset such as 2026-11-23T12:00:00Z"
    found = MOMENT_PATTERN.fullmatch(value) if isinstance(value, str) else None
    if found is None:
        raise WalletError("validation_error", f"{field} must be {example}, got {value!r}")
    year, month, day, hour, minute, second = (int(found.group(i)) for i in range(1, 7))
    fraction = found.group(7) or "."
    micros = int(fraction[1:7].ljust(6, "0"))
    if second == 60:  # a leap second
        second, micros = 59, 999_999
    try:
        naive = datetime(max(year, 1), month, day, hour, minute, second, micros)
    except ValueError:
        raise WalletError(
            "validation_error", f"{field} must be a real date and time: {example}, got {value!r}"
        ) from None
    if year == 0:
        naive = datetime.min
    offset = (
        timedelta(0)
        if found.group(8) in ("Z", "z")
        else (
            (1 if found.group(8)[0] == "+" else -1) * timedelta(hours=int(found.group(9)), minutes=int(found.group(10)))
        )
    )
    if abs(offset) >= timedelta(hours=24) or int(found.group(10) or 0) >= 60:
        raise WalletError("validation_error", f"{field} has an offset beyond ±23:59: {example}, got {value!r}")
    try:
        return (naive - offset).replace(tzinfo=UTC)
    except OverflowError:
        return (datetime.min if offset > timedelta(0) else datetime.max).replace(tzinfo=UTC)


def transfer_request(
    from_account: object,
    to_account: object,
    amount: object,
    currency: object,
    transaction_id: object,
    mode: object,
    default_mode: Mode,
) -> Transfer:
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


def deposit_request(account_id: object, amount: object, currency: object, transaction_id: object) -> Transfer:
    """Money entering an account from outside: one shard, no cross-shard mode. The planner
    refuses (and records) an account that is missing or in another currency."""
    checked_currency = check_currency(currency)
    return Transfer(
        check_transaction_id(transaction_id),
        "deposit",
        None,
        check_account_id(account_id),
        parse_amount(amount, checked_currency),
        checked_currency,
        "local",
    )
