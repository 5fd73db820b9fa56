"""The simulated ledger: ledger/contract.py's partitions in memory, for the simulator.

Like PostgreSQL's: an append holds its stream's head (the next append of the stream waits,
in arrival order), writes nothing visible until it exits cleanly, and keeps nothing if the
server crashes first (or its commit lands and the answer is lost: the relay sees an error).
(account, version) is unique on a server, as ledger_events' constraint makes it. Rows arrive
as the COPY text the relay writes, and are parsed back: the twin reads what PostgreSQL would.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime

from chaos.simulation.shard import ConstraintViolated
from ledger.chain import GENESIS, LedgerEvent
from ledger.contract import StreamHead

PAGE_SIZE_MAX = 1000


class LedgerDown(ConnectionError):
    """The ledger server cannot be reached (an OSError, as asyncpg raises for one)."""


def parse_copy_line(line: str) -> tuple[LedgerEvent, str]:
    """One COPY text row (ledger/appends.py's COPY_COLUMNS) as the event and its visible_at."""
    (
        stream,
        position,
        source_event_id,
        transaction_id,
        account_id,
        version,
        kind,
        amount,
        reserved_delta,
        balance_after,
        reserved_after,
        currency,
        created_at,
        prev_hash,
        hash_,
        visible_at,
    ) = line.split("\t")
    assert prev_hash.startswith("\\\\x") and hash_.startswith("\\\\x"), "bytea travels as \\x hex in COPY text"
    event = LedgerEvent(
        stream,
        int(position),
        int(source_event_id),
        transaction_id,
        account_id,
        int(version),
        kind,
        int(amount),
        int(reserved_delta),
        int(balance_after),
        int(reserved_after),
        currency,
        datetime.fromisoformat(created_at.replace("Z", "+00:00")),
        bytes.fromhex(prev_hash[3:]),
        bytes.fromhex(hash_[3:]),
    )
    return event, visible_at


@dataclass
class SimulatedAppend:
    server: SimulatedLedgerServer
    stream: str
    head: StreamHead
    staged: list[tuple[LedgerEvent, str]] = field(default_factory=list)
    moved_to: StreamHead | None = None

    async def present(self, keys: list[tuple[str, int]]) -> set[tuple[str, int]]:
        self.server.check_up()
        held = self.server.keys.get(self.stream, set())
        return {key for key in keys if key in held}

    async def prior_visible(self, wanted: dict[str, int]) -> dict[str, str]:
        return self.server.visible_of(wanted)

    async def extend(self, lines: bytes, position: int, head: bytes, source_high: int) -> None:
        self.server.check_up()
        for line in lines.decode().splitlines():
            self.staged.append(parse_copy_line(line))
        self.moved_to = StreamHead(position, head, self.head.state, max(self.head.source_high, source_high))


class SimulatedLedgerServer:
    """One ledger server: the streams it holds, their heads and events."""

    def __init__(self, name: str, streams: tuple[str, ...], fault: Callable[[str], str | None] | None = None) -> None:
        self.name = name
        self.streams = streams
        self.heads: dict[str, StreamHead] = {}
        self.events: dict[str, list[tuple[LedgerEvent, str]]] = {}
        self.keys: dict[str, set[tuple[str, int]]] = {}  # per stream
        self.visible: dict[tuple[str, int], str] = {}  # (account, version) -> visible_at, server-wide
        self.head_locks: dict[str, asyncio.Lock] = {}
        self.incarnation = 0
        self.up = True
        # At an append's end: None, "lost" (it does not land) or "lost_ack" (it lands, the answer is lost).
        self.fault = fault or (lambda stream: None)

    def check_up(self) -> None:
        if not self.up:
            raise LedgerDown(f"ledger server {self.name} is down")

    def crash(self) -> None:
        self.incarnation += 1

    def visible_of(self, wanted: dict[str, int]) -> dict[str, str]:
        self.check_up()
        return {a: self.visible[(a, v)] for a, v in wanted.items() if (a, v) in self.visible}

    @asynccontextmanager
    async def append(self, stream: str) -> AsyncIterator[SimulatedAppend]:
        self.check_up()
        incarnation = self.incarnation
        async with self.head_locks.setdefault(stream, asyncio.Lock()):
            self.check_up()
            appending = SimulatedAppend(self, stream, self.heads.get(stream, StreamHead(0, GENESIS, "live", 0)))
            yield appending
            fault = self.fault(stream)
            if incarnation != self.incarnation or not self.up or fault == "lost":
                raise LedgerDown(f"ledger server {self.name}: the connection was lost before COMMIT")
            self._commit(appending)
        if fault == "lost_ack":
            raise LedgerDown(f"ledger server {self.name}: the append's answer was lost")

    def _commit(self, appending: SimulatedAppend) -> None:
        if appending.moved_to is None:
            return
        keys = self.keys.setdefault(appending.stream, set())
        for event, visible_at in appending.staged:
            key = (event.account_id, event.version)
            if key in self.visible:
                raise ConstraintViolated(f"ledger {self.name}: ({event.account_id}, {event.version}) twice")
            keys.add(key)
            self.visible[key] = visible_at
        self.events.setdefault(appending.stream, []).extend(appending.staged)
        self.heads[appending.stream] = appending.moved_to

    async def prior_visible(self, wanted: dict[str, int]) -> dict[str, str]:
        return self.visible_of(wanted)

    async def stream_events(self, stream: str) -> AsyncIterator[list[LedgerEvent]]:
        self.check_up()
        events = [event for event, _ in self.events.get(stream, [])]
        for start in range(0, len(events), PAGE_SIZE_MAX):
            yield events[start : start + PAGE_SIZE_MAX]


class SimulatedLedger:
    """Which simulated server holds each stream (ledger/contract.py's LedgerServers)."""

    def __init__(self, servers: list[SimulatedLedgerServer]) -> None:
        self.servers = {server.name: server for server in servers}

    def names(self) -> list[str]:
        return sorted(self.servers)

    def streams(self) -> list[str]:
        return sorted(stream for server in self.servers.values() for stream in server.streams)

    def holding(self, stream: str) -> SimulatedLedgerServer:
        for server in self.servers.values():
            if stream in server.streams:
                return server
        raise KeyError(f"no simulated ledger server holds {stream}")

    def __getitem__(self, name: str) -> SimulatedLedgerServer:
        return self.servers[name]
