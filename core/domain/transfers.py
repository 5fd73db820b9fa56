"""Transfers: the request (Transfer) and its recorded outcome (TransferResult), as tuples.

A batch of a thousand transfers holds a thousand of each; a tuple costs a fraction of a
frozen dataclass to make and to read (docs/figures.md). Their invariants are
established where they are made: validation (domain/validation.py) builds requests, the
planners build results, rows read back from a shard were checked when written.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal, NamedTuple, get_args

from core.domain.errors import RecordedCode

# The vocabulary, each word defined once: the API's schemas, the planners and the SQL mapping
# use these types (Literal: free at run time, checked by mypy); the tuples are their values.
TransferKind = Literal["transfer", "deposit"]
# The cross-shard protocol a request asks for (`mode`); a deposit's is "local".
Mode = Literal["2pc", "tcc", "saga"]
RequestMode = Literal["2pc", "tcc", "saga", "local"]
# How the money moved: one local transaction, or one of the cross-shard protocols.
ProtocolName = Literal["local", "2pc", "tcc", "saga"]
Status = Literal["success", "failed"]
# A final record's phase: 2PC and local committed | aborted; TC/C confirmed | cancelled; Saga
# completed | compensated.
Phase = Literal["committed", "aborted", "confirmed", "cancelled", "completed", "compensated"]
# Where an unfinished transfer stands (GET /v1/transfers/{id} answers 202 with it).
PendingPhase = Literal["preparing", "in-doubt", "trying", "debited", "confirming", "cancelling"]

TRANSFER_KINDS: tuple[TransferKind, ...] = get_args(TransferKind)
MODES: tuple[Mode, ...] = get_args(Mode)
PROTOCOLS: tuple[ProtocolName, ...] = get_args(ProtocolName)
STATUSES: tuple[Status, ...] = get_args(Status)
PHASES: tuple[Phase, ...] = get_args(Phase)
PENDING_PHASES: tuple[PendingPhase, ...] = get_args(PendingPhase)


class Transfer(NamedTuple):
    """One request to move money. A deposit has no from_account: money enters from outside."""

    transaction_id: str  # a UUID, lower case
    kind: TransferKind
    from_account: str | None
    to_account: str
    amount: int  # minor units, > 0
    currency: str
    mode: RequestMode

    @property
    def movement(self) -> tuple[str, str | None, str, int, str]:
        """What the idempotency key promises: the money movement (kind, from, to, amount,
        currency), not the protocol used for it. A retry must move the same."""
        return self[1:6]


class TransferResult(NamedTuple):
    """The recorded outcome of one transaction id: status success, or failed with its code."""

    transfer: Transfer
    status: Status
    error_code: RecordedCode | None  # a failed one's business reason
    protocol: ProtocolName
    phase: Phase
    created_at: datetime | None = None

    def stamped(self, created_at: datetime | None) -> TransferResult:
        """This result with the moment its record was stored."""
        return self._replace(created_at=created_at)


class RecordColumns(NamedTuple):
    """Transfer records to write, as columns: the shape the write statement binds
    (shards/transfers.py), with no result object made per record before its time is known."""

    transfers: list[Transfer]
    protocols: list[ProtocolName]
    statuses: list[Status]
    phases: list[Phase]
    error_codes: list[RecordedCode | None]

    @classmethod
    def of(cls, results: list[TransferResult]) -> RecordColumns:
        """The columns of finished results (the TC/C and Saga steps make few at a time)."""
        return cls(
            [r.transfer for r in results],
            [r.protocol for r in results],
            [r.status for r in results],
            [r.phase for r in results],
            [r.error_code for r in results],
        )
