"""Transfers: the request (Transfer) and its recorded outcome (TransferResult). Frozen and
driver-free: they cross every layer."""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

TRANSFER_KINDS = ("transfer", "deposit")
MODES = ("2pc", "tcc", "saga")


@dataclass(frozen=True)
class Transfer:
    """One request to move money. A deposit has no from_account: money enters from outside."""

    transaction_id: UUID
    kind: str
    from_account: str | None
    to_account: str
    amount: int  # minor units, > 0
    currency: str
    mode: str

    def __post_init__(self) -> None:
        assert self.kind in TRANSFER_KINDS, f"kind must be one of {TRANSFER_KINDS}"
        assert (self.from_account is None) == (self.kind == "deposit"), "only a deposit has no from_account"
        assert isinstance(self.amount, int) and self.amount > 0, "amount is positive minor units"
        assert self.from_account != self.to_account, "same_account is refused before a Transfer is built"
        assert self.mode in MODES or self.mode == "local", f"unknown mode {self.mode!r}"

    @property
    def request_hash(self) -> bytes:
        """What the idempotency key promises: the money movement, not the protocol used for it.
        SHA-256 of the compact JSON list [kind, from, to, amount, currency]; stored with every
        record, so this form must never change. Computed once per Transfer (not with
        functools.cached_property: before Python 3.12 it takes a lock on every first read)."""
        cached = self.__dict__.get("_request_hash")
        if cached is None:
            cached = self.__dict__["_request_hash"] = self._hash_request()
        return cached

    def _hash_request(self) -> bytes:
        if _JSON_PLAIN.match(f"{self.kind}{self.from_account or ''}{self.to_account}{self.currency}"):
            # Validated ids and words: JSON writes them as they are, between quotes.
            sender = "null" if self.from_account is None else f'"{self.from_account}"'
            canonical = f'["{self.kind}",{sender},"{self.to_account}",{self.amount},"{self.currency}"]'
        else:
            canonical = json.dumps([self.kind, self.from_account, self.to_account, self.amount, self.currency],
                                   separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).digest()


# Text that json.dumps writes as itself between quotes: printable ASCII but " and \.
_JSON_PLAIN = re.compile(r'[ !#-\[\]-~]*\Z')


@dataclass(frozen=True)
class TransferResult:
    """The recorded outcome of one transaction id."""

    transfer: Transfer
    status: str  # "success" | "failed"
    error_code: str | None
    protocol: str  # "local" for one-shard transfers and deposits
    phase: str  # "committed" | "aborted" (later protocols add their in-between phases)
    created_at: datetime | None = None

    def __post_init__(self) -> None:
        assert self.status in ("success", "failed"), f"unknown status {self.status!r}"
        assert (self.error_code is None) == (self.status == "success"), "a failure carries its code"

    def stamped(self, created_at: datetime | None) -> TransferResult:
        """This result with the moment its record was stored (dataclasses.replace, minus its cost)."""
        return TransferResult(self.transfer, self.status, self.error_code, self.protocol, self.phase, created_at)



@dataclass(frozen=True)
class StoredTransfer:
    """A transaction id already recorded on the shard."""

    request_hash: bytes
    result: TransferResult
