"""What the API answers, as typed values: one class per response schema of the OpenAPI
document (tests/test_client.py holds their fields to it). Amounts stay decimal strings, as
the API sends them; never floats."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, TypeVar

Model = TypeVar("Model")


def build(kind: type[Model], body: dict[str, Any]) -> Model:
    """`kind` from a JSON object, ignoring fields this client does not know (newer servers)."""
    known = {f.name for f in fields(kind)}  # type: ignore[arg-type]
    return kind(**{name: value for name, value in body.items() if name in known})


@dataclass(frozen=True)
class Account:
    account_id: str
    owner: str
    currency: str
    balance: str
    available: str
    reserved: str
    status: str
    etag: str | None = None  # the ETag it came with, for get_account(if_none_match=...)


@dataclass(frozen=True)
class Transfer:
    """A transfer's recorded outcome."""

    status: str  # success | failed
    transaction_id: str
    kind: str  # transfer | deposit
    from_account: str | None
    to_account: str
    amount: str
    currency: str
    mode: str
    protocol: str  # local | 2pc | tcc | saga
    phase: str
    error_code: str | None = None
    created_at: str | None = None

    @property
    def succeeded(self) -> bool:
        return self.status == "success"


@dataclass(frozen=True)
class Pending:
    """Not final yet: only the phase."""

    transaction_id: str
    status: str
    phase: str


@dataclass(frozen=True)
class BatchResult:
    """One batch item's answer: a recorded transfer (and `code` when it failed), or a refusal
    that recorded nothing (`code`, `detail`)."""

    status: str
    transaction_id: str | None
    code: str | None = None
    detail: str | None = None
    kind: str | None = None
    from_account: str | None = None
    to_account: str | None = None
    amount: str | None = None
    currency: str | None = None
    mode: str | None = None
    protocol: str | None = None
    phase: str | None = None
    error_code: str | None = None
    created_at: str | None = None


@dataclass(frozen=True)
class BalanceAt:
    account_id: str
    currency: str
    at: str
    balance: str
    reserved: str
    available: str
    version: int


@dataclass(frozen=True)
class HistoryItem:
    version: int
    transaction_id: str
    kind: str
    amount: str
    reserved_change: str
    balance_after: str
    at: str


@dataclass(frozen=True)
class History:
    account_id: str
    items: list[HistoryItem]
    next_after_version: int | None


@dataclass(frozen=True)
class Ready:
    status: str
    checks: dict[str, str]
    topology_version: int


@dataclass(frozen=True)
class ProblemType:
    code: str
    status: int
    title: str
    meaning: str


@dataclass(frozen=True)
class Event:
    """One server-sent event: `phase` (data is a Pending), `final` (a Transfer), `timeout`, `error`."""

    event: str
    data: dict[str, Any] = field(default_factory=dict)
