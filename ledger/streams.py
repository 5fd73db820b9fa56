"""A stream moved from one ledger server to another, online, by a fenced copy.

The topology says which server holds each stream (a stream is one shard's events). A move:

  1. fence: on the source, under the stream head's lock, the head becomes `moving`. The
     relay checks the head under the same lock and leaves a stream that is not `live` alone,
     so from here the shard's outbox waits (nothing is lost: it is the outbox);
  2. copy: in one transaction on the target, the events the target does not have (after
     its own copy's head, if the stream lived there before: that copy must be a prefix of
     the source's, hash for hash) and the head, `live`;
  3. route: the topology, one version up, puts the stream on the target; relays and
     readers follow it (the relay finds the target's head live and appends);
  4. retire: the source's head becomes `moved`. Its events stay, fenced: nothing reads
     them, and a stream that moves back later appends to them.

At every moment at most one server's head is live for the stream. A move interrupted
anywhere is finished by running it again (each step sees what is done), or rolled back
by moving the stream to where the topology still puts it: the target's copy is fenced
first, then the source goes live again.

Snapshots stay on the server that took them: the target replays a moved stream from its
first event until its next snapshot.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import asyncpg

from core.domain.errors import ConfigurationError
from core.runtime import fault_points
from ledger.appends import COPY_COLUMNS, CREATE_HEAD
from ledger.chain import GENESIS
from shard_router.stores import TopologyStore
from shard_router.topology import Topology

COPY_PAGE = 100_000  # events per COPY from the source to the target
HEAD = "SELECT position, hash, state, source_high FROM ledger_heads WHERE stream = $1"
LOCK_HEAD = HEAD + " FOR UPDATE"
SET_STATE = "UPDATE ledger_heads SET state = $2 WHERE stream = $1"
HASH_AT = "SELECT hash FROM ledger_events WHERE stream = $1 AND position = $2"
# COPY takes no parameters: asyncpg quotes these into the query through the server's own
# quoting (copy_from_query's arguments).
PAGE = f"""
SELECT {", ".join(COPY_COLUMNS)} FROM ledger_events
WHERE stream = $1 AND position > $2 AND position <= $3 ORDER BY position
"""
UPSERT_HEAD = """
INSERT INTO ledger_heads (stream, position, hash, state, source_high) VALUES ($1, $2, $3, 'live', $4)
ON CONFLICT (stream) DO UPDATE SET position = $2, hash = $3, state = 'live', source_high = $4
"""


class StreamMoveError(ConfigurationError):
    """A move that cannot go on as asked: the message says what to do."""


@dataclass(frozen=True)
class Head:
    position: int
    hash: bytes
    state: str
    source_high: int


@dataclass(frozen=True)
class MoveReport:
    stream: str
    source: str
    target: str
    copied: int  # events copied by this run
    version: int  # the topology version that routes the stream to the target
    outcome: str  # "moved", "resumed", "rolled back", "finished", "already there"


async def _head(connection: asyncpg.Connection, stream: str, lock: bool = False) -> Head | None:
    try:
        row = await connection.fetchrow(LOCK_HEAD if lock else HEAD, stream)
    except asyncpg.UndefinedTableError as error:
        raise StreamMoveError("a ledger server without the ledger schema: run `wallet db upgrade --all`") from error
    return None if row is None else Head(row[0], bytes(row[1]), row[2], row[3])


async def _set_state(dsn: str, stream: str, state: str, expect: tuple[str, ...], create: bool = False) -> Head | None:
    """The head's state set (if it is one of `expect`), under its lock; the head before.
    `create`: a stream nothing was relayed into yet gets its head first (so that the relay
    finds it fenced, not absent)."""
    connection = await asyncpg.connect(dsn)
    try:
        async with connection.transaction():
            if create:
                await connection.execute(CREATE_HEAD, stream, GENESIS)
            head = await _head(connection, stream, lock=True)
            if head is not None and head.state in expect and head.state != state:
                await connection.execute(SET_STATE, stream, state)
            return head
    finally:
        await connection.close()


async def _read_head(dsn: str, stream: str) -> Head | None:
    connection = await asyncpg.connect(dsn)
    try:
        return await _head(connection, stream)
    finally:
        await connection.close()


async def move_stream(
    store: TopologyStore, stream: str, target: str, progress: Callable[[int], None] | None = None
) -> MoveReport:
    topology = await asyncio.to_thread(store.load)
    if stream not in topology.shards:
        raise StreamMoveError(f"no stream {stream!r}: streams are named by their shards, {sorted(topology.shards)}")
    if target not in topology.ledgers:
        raise StreamMoveError(
            f"no ledger server {target!r} in the topology (it has {sorted(topology.ledgers)}): "
            "add one with `wallet topology set-ledger NAME DSN`"
        )
    source = topology.ledger_of(stream)
    if source == target:
        return await _settle(topology, stream, target)
    source_dsn, target_dsn = topology.ledgers[source].dsn, topology.ledgers[target].dsn
    # 1. fence the source (a rerun finds it fenced already)
    before = await _set_state(source_dsn, stream, "moving", expect=("live",), create=True)
    if before is not None and before.state == "moved":
        raise StreamMoveError(
            f"stream {stream} on ledger {source} is a retired copy, but the topology still puts it there: "
            "the topology was replaced behind a move; restore the version that routes it to where its head is live"
        )
    resumed = before is not None and before.state == "moving"
    fault_points.reach("stream_move.after_fence")
    # 2. copy what the target lacks, and its head, live
    copied = await _copy(stream, source, source_dsn, target, target_dsn, progress)
    fault_points.reach("stream_move.after_copy")
    # 3. route
    routed = topology.with_stream_on(stream, target)
    await asyncio.to_thread(store.save, routed)
    fault_points.reach("stream_move.after_route")
    # 4. retire the source's copy
    await _set_state(source_dsn, stream, "moved", expect=("moving",))
    return MoveReport(stream, source, target, copied, routed.version, "resumed" if resumed else "moved")


async def _copy(
    stream: str,
    source: str,
    source_dsn: str,
    target: str,
    target_dsn: str,
    progress: Callable[[int], None] | None,
) -> int:
    reading = await asyncpg.connect(source_dsn)
    writing = await asyncpg.connect(target_dsn)
    try:
        end = await _head(reading, stream)
        if end is None or end.state != "moving":
            state = "absent" if end is None else end.state
            raise StreamMoveError(f"stream {stream} on ledger {source} is {state}, not fenced: not copied")
        async with writing.transaction():
            there = await _head(writing, stream, lock=True)
            after = 0
            if there is not None:
                if there.state == "live" and (there.position, there.hash) == (end.position, end.hash):
                    return 0  # copied by an earlier run
                if there.position > end.position:
                    raise StreamMoveError(
                        f"ledger {target} holds {there.position} events of stream {stream}, more than its "
                        f"source {source} ({end.position}): the two copies diverge; not moved"
                    )
                if there.position > 0:
                    same = await reading.fetchval(HASH_AT, stream, there.position)
                    if same is None or bytes(same) != there.hash:
                        raise StreamMoveError(
                            f"ledger {target}'s old copy of stream {stream} is not a prefix of {source}'s "
                            f"(position {there.position} differs): not moved"
                        )
                after = there.position
            while after < end.position:
                last = min(after + COPY_PAGE, end.position)
                collected = _Collect()
                await reading.copy_from_query(PAGE, stream, after, last, output=collected)
                await writing.copy_to_table(
                    "ledger_events", source=collected.chunks(), columns=COPY_COLUMNS, format="text"
                )
                if progress is not None:
                    progress(last - after)
                after = last
            await writing.execute(UPSERT_HEAD, stream, end.position, end.hash, end.source_high)
        return end.position - (there.position if there is not None else 0)
    finally:
        await reading.close()
        await writing.close()


class _Collect:
    """COPY output gathered in memory (a page is bounded by COPY_PAGE events)."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    async def __call__(self, data: bytes) -> None:
        self.parts.append(bytes(data))

    async def chunks(self) -> AsyncIterator[bytes]:
        for part in self.parts:
            yield part


async def _settle(topology: Topology, stream: str, holder: str) -> MoveReport:
    """A move to where the topology already puts the stream: finish one that routed but did
    not retire the source, or roll back one that fenced (and maybe copied) but did not route."""
    head = await _read_head(topology.ledgers[holder].dsn, stream)
    others = {name: server.dsn for name, server in topology.ledgers.items() if name != holder}
    if head is not None and head.state == "moved":
        raise StreamMoveError(
            f"stream {stream} on ledger {holder} is a retired copy, but the topology puts it there: "
            "restore the topology version that routes it to where its head is live"
        )
    if head is not None and head.state == "moving":  # roll back: other copies fenced first
        for dsn in others.values():
            await _set_state(dsn, stream, "moved", expect=("live", "moving"))
        await _set_state(topology.ledgers[holder].dsn, stream, "live", expect=("moving",))
        return MoveReport(stream, holder, holder, 0, topology.version, "rolled back")
    finished = False
    for dsn in others.values():
        before = await _set_state(dsn, stream, "moved", expect=("moving",))
        finished = finished or (before is not None and before.state == "moving")
    return MoveReport(stream, holder, holder, 0, topology.version, "finished" if finished else "already there")
