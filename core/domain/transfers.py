"""Transfers: the request (Transfer) and its recorded outcome (TransferResult), as tuples.

A batch of a thousand transfers holds a thousand of each; a tuple costs a fraction of a
frozen dataclass to make and to read (README.md, "Measured figures"). Their invariants are
established where they are made: validation (domain/validation.py) builds requests, the
planners build results, rows read back from a shard were checked when written.
"""

from __future__ import annotations

from datetime import datetime
from typing import NamedTuple

TRANSFER_KINDS = ("transfer", "deposit")
MODES = ("2pc", "tcc", "saga")


class Transfer(NamedTuple):
    """One request to move money. A deposit has no from_account: money enters from outside."""

    transaction_id: str  # a UUID, lower case
    kind: str  # transfer | deposit
    from_account: str | None
    to_account: str
    amount: int  # minor units, > 0
    currency: str
    mode: str  # 2pc | tcc | saga | local

    @property
    def movement(self) -> tuple[str, str | None, str, int, str]:
        """What the idempotency key promises: the money movement (kind, from, to, amount,
        currency), not the protocol used for it. A retry must move the same."""
        return self[1:6]


class TransferResult(NamedTuple):
    """The recorded outcome of one transaction id: status success, or failed with its code."""

    transfer: Transfer
    status: str  # success | failed
    error_code: str | None
    protocol: str  # local | 2pc | tcc | saga
    phase: str  # committed | aborted (TC/C confirmed | cancelled; Saga completed | compensated)
    created_at: datetime | None = None

    def stamped(self, created_at: datetime | None) -> TransferResult:
        """This result with the moment its record was stored."""
        return self._replace(created_at=created_at)


class RecordColumns(NamedTuple):
    """Transfer records to write, as columns: the shape the write statement binds
    (shards/transfers.py), with no result object made per record before its time is known."""

    transfers: list[Transfer]
    protocols: list[str]
    statuses: list[str]
    phases: list[str]
    error_codes: list[str | None]

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
