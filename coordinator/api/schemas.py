"""The API's contract as typed schemas (msgspec Structs): each body, response, path and query
parameter is declared once, here. The same definitions decode and check requests
(api/bodies.py) and make the OpenAPI components (api/openapi.py), so the document cannot
state a rule the server does not enforce, or miss one it does.

Every rule's text comes from the domain (domain/validation.py, domain/money.py): a pattern
here is the pattern the server checks. Amounts depend on the currency (JPY has no decimals,
BHD three), so a body that carries an amount is one schema per currency, told apart by its
`currency` field (a discriminated union).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType

from core.domain.accounts import AccountStatus
from core.domain.errors import ErrorCode, RecordedCode
from core.domain.limits import TRANSFERS_PER_REQUEST_MAX
from core.domain.money import AMOUNT_TEXT_LENGTH_MAX, CURRENCY_DECIMALS, amount_rule
from core.domain.transfers import Mode, PendingPhase, Phase, ProtocolName, RequestMode, Status, TransferKind
from core.domain.validation import ACCOUNT_ID_LENGTH_MAX, ACCOUNT_ID_RULE, OWNER_LENGTH_MAX, OWNER_RULE, UUID_RULE
from ledger.store import PAGE_SIZE_MAX

CURRENCIES = tuple(sorted(CURRENCY_DECIMALS))
WAIT_S_MAX = 30  # ?wait= longest long poll
AFTER_VERSION_MAX = 2**62
HISTORY_PAGE_DEFAULT = 100

AccountId = Annotated[
    str,
    Meta(
        pattern=ACCOUNT_ID_RULE,
        max_length=ACCOUNT_ID_LENGTH_MAX,
        examples=["alice"],
        description="1-64 of [A-Za-z0-9_.:-], starting with a letter or digit",
    ),
]
Owner = Annotated[
    str,
    Meta(
        pattern=OWNER_RULE,
        min_length=1,
        max_length=OWNER_LENGTH_MAX,
        examples=["alice"],
        description="1-128 characters, no control characters, not only spaces",
    ),
]
# No example: generated requests that reused one id would only meet idempotency_conflict.
TransactionId = Annotated[
    str,
    Meta(
        pattern=UUID_RULE,
        extra_json_schema={"format": "uuid"},
        description="the idempotency key: a retry with the same id and body gets the first answer",
    ),
]
Currency = Annotated[str, Meta(extra_json_schema={"enum": list(CURRENCIES)}, examples=["USD"], description="ISO 4217")]
# A signed decimal string, as balances and history report them.
DECIMAL = r"^-?[0-9]+(\.[0-9]+)?$"
Decimal = Annotated[str, Meta(pattern=DECIMAL, examples=["12.34"])]
Moment = Annotated[str, Meta(extra_json_schema={"format": "date-time"}, examples=["2026-11-23T12:00:00Z"])]


def amount(currency: str) -> Any:
    decimals = CURRENCY_DECIMALS[currency]
    example = "1500" if decimals == 0 else "12." + "50"[:decimals].ljust(decimals, "0")
    return Annotated[
        str,
        Meta(
            pattern=amount_rule(decimals),
            max_length=AMOUNT_TEXT_LENGTH_MAX,
            examples=[example],
            description=f"a positive decimal string with at most {decimals} decimals "
            f"({currency}), at most 10^15 minor units",
        ),
    ]


# The currency of a decoded body: its tag (msgspec keeps the tag on the class, not the object).
CURRENCY_OF: dict[type, str] = {}


def per_currency(name: str, fields: list[tuple[str, Any] | tuple[str, Any, Any]]) -> Any:
    """The union of one Struct per currency, each with that currency's amount rule."""
    members = []
    for currency in CURRENCIES:
        member = msgspec.defstruct(
            f"{name}{currency}",
            [*fields[:1], ("amount", amount(currency)), *fields[1:]],
            tag=currency,
            tag_field="currency",
            forbid_unknown_fields=True,
            kw_only=True,
            module=__name__,
        )
        CURRENCY_OF[member] = currency
        members.append(member)
    return Union[tuple(members)]  # noqa: UP007 (a runtime union of the generated types)


def currency_of(body: object) -> str:
    return CURRENCY_OF[type(body)]


# -- request bodies -------------------------------------------------------------------------
class NewAccount(Struct, forbid_unknown_fields=True):
    account_id: AccountId
    owner: Owner
    currency: Currency


Deposit = per_currency("Deposit", [("transaction_id", TransactionId)])
TransferRequest = per_currency(
    "Transfer",
    [
        ("from_account", AccountId),
        ("to_account", AccountId),
        ("transaction_id", TransactionId),
        ("mode", Mode | None, None),
    ],
)
BatchItem = Annotated[
    msgspec.Raw,
    Meta(
        description="a transfer, as the body of POST /v1/wallet/balance_transfer; each item "
        "is checked on its own, and a bad one fails alone with its code in the "
        "results, so any JSON value is accepted here"
    ),
]


class BatchRequest(Struct, forbid_unknown_fields=True):
    transfers: Annotated[list[BatchItem], Meta(min_length=1, max_length=TRANSFERS_PER_REQUEST_MAX)]


# -- path and query parameters --------------------------------------------------------------
class AccountPath(Struct):
    account_id: AccountId


class TransferPath(Struct):
    transaction_id: TransactionId


class ProblemPath(Struct):
    code: Annotated[str, Meta(pattern=r"^[a-z_]{1,64}$", examples=["insufficient_funds"])]


class WaitQuery(Struct):
    wait: Annotated[int, Meta(ge=0, le=WAIT_S_MAX, description="answer once final, or after this many seconds")] = 0


class BalanceQuery(Struct):
    at: Annotated[
        str,
        Meta(
            extra_json_schema={"format": "date-time"},
            examples=["2026-11-23T12:00:00Z"],
            description="RFC 3339, with its offset",
        ),
    ]


class HistoryQuery(Struct):
    after_version: Annotated[int, Meta(ge=0, le=AFTER_VERSION_MAX)] = 0
    limit: Annotated[int, Meta(ge=1, le=PAGE_SIZE_MAX)] = HISTORY_PAGE_DEFAULT


# -- responses ------------------------------------------------------------------------------
# Enumerations the server reports are the domain's types (core/domain/transfers.py,
# accounts.py, errors.py): one definition for the document, the code and the SQL mapping.


class Account(Struct):
    account_id: str
    owner: str
    currency: str
    balance: Decimal
    available: Decimal
    reserved: Decimal
    status: AccountStatus


class Transfer(Struct, omit_defaults=True):
    """A transfer's recorded outcome (a failure carries its error_code)."""

    status: Status
    transaction_id: Annotated[str, Meta(extra_json_schema={"format": "uuid"})]
    kind: TransferKind
    from_account: str | None
    to_account: str
    amount: Decimal
    currency: str
    mode: RequestMode
    protocol: ProtocolName
    phase: Phase
    error_code: RecordedCode | UnsetType = UNSET
    created_at: Moment | UnsetType = UNSET


class Pending(Struct):
    """Not final yet: only the phase, no accounts or amounts."""

    transaction_id: str
    status: Literal["pending"]
    phase: PendingPhase


class BatchResult(Struct, omit_defaults=True):
    """One item's answer: a recorded transfer (its fields, and `code` when it failed), or a
    refusal that recorded nothing (`code` and `detail`; `transaction_id` as sent, if any)."""

    status: Status
    transaction_id: str | None
    code: ErrorCode | UnsetType = UNSET
    detail: str | UnsetType = UNSET
    kind: TransferKind | UnsetType = UNSET
    from_account: str | None | UnsetType = UNSET
    to_account: str | UnsetType = UNSET
    amount: Decimal | UnsetType = UNSET
    currency: str | UnsetType = UNSET
    mode: RequestMode | UnsetType = UNSET
    protocol: ProtocolName | UnsetType = UNSET
    phase: Phase | UnsetType = UNSET
    error_code: RecordedCode | UnsetType = UNSET
    created_at: Moment | UnsetType = UNSET


class BatchResults(Struct):
    results: list[BatchResult]


class BalanceAt(Struct):
    account_id: str
    currency: str
    at: Moment
    balance: Decimal
    reserved: Decimal
    available: Decimal
    version: Annotated[int, Meta(ge=0)]


class HistoryItem(Struct):
    version: int
    transaction_id: str
    kind: str
    amount: Decimal
    reserved_change: Decimal
    balance_after: Decimal
    at: Moment


class History(Struct):
    account_id: str
    items: list[HistoryItem]
    next_after_version: int | None


class Health(Struct):
    status: str


class Ready(Struct):
    status: Annotated[str, Meta(extra_json_schema={"enum": ["ready"]})]
    checks: dict[str, str]
    topology_version: int


class Problem(Struct):
    """RFC 9457 problem details; `type` resolves to /problems/{code}."""

    type: str
    title: str
    status: int
    code: str
    detail: str


class ProblemType(Struct):
    """What a problem code means."""

    code: str
    status: int
    title: str
    meaning: str


class Event(Struct):
    """One server-sent event: `data` is JSON, a Pending for `phase`, a Transfer for `final`."""

    data: str
    event: Annotated[str, Meta(extra_json_schema={"enum": ["phase", "final", "timeout", "error"]})] | UnsetType = UNSET
    retry: int | UnsetType = UNSET


RESPONSES = (Account, Transfer, Pending, BatchResults, BalanceAt, History, Health, Ready, Problem, ProblemType, Event)
REQUESTS = (NewAccount, Deposit, TransferRequest, BatchRequest)
