"""The hash chain, as pure functions: an event's canonical bytes, its hash, and verification."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

GENESIS = bytes(32)  # prev_hash of a stream's first event


@dataclass(frozen=True)
class LedgerEvent:
    stream: str
    position: int
    source_event_id: int
    transaction_id: str
    account_id: str
    version: int
    kind: str
    amount: int
    reserved_delta: int
    balance_after: int
    reserved_after: int
    currency: str
    created_at: datetime
    prev_hash: bytes = GENESIS
    hash: bytes = b""


def canonical(event: LedgerEvent) -> bytes:
    """Every field the hash protects, in a fixed order and format (UTC, microseconds)."""
    # The same text as strftime("%Y-%m-%dT%H:%M:%S.%fZ"), at a fraction of its cost.
    moment = event.created_at.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"
    fields = (
        event.stream,
        event.position,
        event.source_event_id,
        event.transaction_id,
        event.account_id,
        event.version,
        event.kind,
        event.amount,
        event.reserved_delta,
        event.balance_after,
        event.reserved_after,
        event.currency,
        moment,
    )
    return "\x1f".join(str(field) for field in fields).encode()


def chain_hash(prev_hash: bytes, event: LedgerEvent) -> bytes:
    assert len(prev_hash) == 32, "hashes are SHA-256"
    return hashlib.sha256(prev_hash + canonical(event)).digest()


@dataclass(frozen=True)
class Break:
    stream: str
    position: int
    transaction_id: str | None
    reason: str

    def __str__(self) -> str:
        return f"stream {self.stream} position {self.position} (transaction {self.transaction_id}): {self.reason}"


class StreamVerifier:
    """Feed a stream's events in position order; `breaks` names every event that does not
    chain: edited (hash mismatch), removed (position gap or broken link), reordered."""

    def __init__(self, stream: str) -> None:
        self.stream = stream
        self.position = 0
        self.hash = GENESIS
        self.breaks: list[Break] = []

    def feed(self, events: Iterable[LedgerEvent]) -> None:
        for event in events:
            assert event.stream == self.stream
            if event.position != self.position + 1:
                self.breaks.append(
                    Break(
                        self.stream,
                        event.position,
                        event.transaction_id,
                        f"expected position {self.position + 1}: events removed or reordered",
                    )
                )
            elif event.prev_hash != self.hash:
                self.breaks.append(
                    Break(
                        self.stream,
                        event.position,
                        event.transaction_id,
                        "prev_hash does not match the event before it: removed or reordered",
                    )
                )
            elif chain_hash(event.prev_hash, event) != event.hash:
                self.breaks.append(
                    Break(
                        self.stream,
                        event.position,
                        event.transaction_id,
                        "content does not match its hash: the event was edited",
                    )
                )
            # Carry on from what is stored, so one bad event is named once, not every one after it.
            self.position, self.hash = event.position, event.hash
