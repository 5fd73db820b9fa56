"""A ledger partition as the relay sees it: one typed contract, two implementations. Partition
(ledger/partitions.py, over ledger/appends.py) is the product; chaos/simulation/ledger.py is
the simulator's in-memory twin. tests/test_ledger_contract.py runs one suite on both.

An append is one transaction on the server holding a stream: the stream's head is locked
(created at genesis if new) for as long as it is open; `present` and `prior_visible` read
under that lock; `extend` writes the chained rows (COPY text: ledger/relay.py's chain_rows)
and moves the head; nothing is visible until the append's context exits without an error,
and nothing is kept if it exits with one (or the server or the relay dies before).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import NamedTuple, Protocol

from ledger.chain import LedgerEvent


class StreamHead(NamedTuple):
    position: int
    hash: bytes
    state: str  # live, moving or moved (ledger/streams.py)
    source_high: int  # the highest outbox event id relayed into the stream


class StreamAppend(Protocol):
    head: StreamHead

    async def present(self, keys: list[tuple[str, int]]) -> set[tuple[str, int]]:
        """Those (account, version) of `keys` the stream holds already."""

    async def prior_visible(self, wanted: dict[str, int]) -> dict[str, str]:
        """visible_at (the chain's text form) of each account's `wanted` version, where this server holds it."""

    async def extend(self, lines: bytes, position: int, head: bytes, source_high: int) -> None:
        """Append COPY-text rows and move the head to (position, head), source_high at least this."""


class LedgerPartition(Protocol):
    name: str
    streams: tuple[str, ...]

    def append(self, stream: str) -> AbstractAsyncContextManager[StreamAppend]: ...

    async def prior_visible(self, wanted: dict[str, int]) -> dict[str, str]:
        """As StreamAppend.prior_visible, outside any append (another server's streams)."""

    def stream_events(self, stream: str) -> AsyncIterator[list[LedgerEvent]]:
        """A stream's events in position order, a bounded page at a time."""


class LedgerServers(Protocol):
    """Which partition holds each stream (ledger/partitions.py's LedgerPartitions)."""

    def names(self) -> list[str]: ...

    def streams(self) -> list[str]: ...

    def holding(self, stream: str) -> LedgerPartition: ...

    def __getitem__(self, name: str) -> LedgerPartition: ...
