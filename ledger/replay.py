"""Balances rebuilt from the ledger at any moment, starting from the latest snapshot before it.

Balances add up: an account's balance at T is the sum of its events visible at T, over
every stream that holds any (an account whose slot moved has events in two). So each ledger
server replays its own streams from its own latest usable snapshot, and the answers are
summed per account. A whole replay reads, per stream, only the tail after the snapshot's
position there, and aggregates it in the database (one GROUP BY per stream); given a pool,
the streams are read at once, on connections of their own. One account is read by its
(account, version) index on every server.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

import asyncpg

from ledger import store
from ledger.partitions import LedgerPartitions, Partition
from shards.pool import Connection

# "Now and everything relayed": later than any event can be.
END_OF_TIME = datetime(9999, 1, 1, tzinfo=UTC)
BEFORE_TIME = store.BEFORE_TIME

Source = Connection | asyncpg.Pool
Progress = Callable[[int], None]  # called with the events just counted


class ReplayedBalance(NamedTuple):  # a tuple: a replay makes one per account
    account_id: str
    currency: str
    balance: int
    reserved: int
    version: int


class Balances(Mapping[str, ReplayedBalance]):
    """Each account's balance at the moment, as the rows the database answered; a
    ReplayedBalance is made when one is read (a replay of every account makes none it does
    not need: a hundred thousand objects are a fifth of a replay's time)."""

    __slots__ = ("rows",)

    def __init__(self, rows: dict[str, Any]) -> None:
        self.rows = rows  # account -> (account_id, currency, balance, reserved, version, ...)

    def __getitem__(self, account_id: str) -> ReplayedBalance:
        row = self.rows[account_id]
        return ReplayedBalance(row[0], row[1], row[2], row[3], row[4])

    def __iter__(self) -> Iterator[str]:
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)

    def __contains__(self, account_id: object) -> bool:
        return account_id in self.rows


@dataclass(frozen=True)
class Replay:
    at: datetime
    # where each ledger server's replay started: a snapshot id, or None (the first event)
    snapshots: Mapping[str, int | None]
    balances: Mapping[str, ReplayedBalance]
    events: int = 0  # events read past the snapshots

    @property
    def snapshot_id(self) -> int | None:
        """The snapshot a one-server ledger's replay started from."""
        ids = list(self.snapshots.values())
        return ids[0] if len(ids) == 1 else None


@dataclass(frozen=True)
class StreamSums:
    """One server's replay, per stream: (account, currency, balance, reserved, version,
    events) rows, each a partial sum over that stream's events (what a snapshot keeps)."""

    snapshot_id: int | None
    streams: dict[str, list[asyncpg.Record]]


class _Lease:
    """A connection from a pool, or the one connection given."""

    def __init__(self, source: Source) -> None:
        self.source = source
        self.acquired: Any = None

    async def __aenter__(self) -> Connection:
        if isinstance(self.source, asyncpg.Pool):
            self.acquired = self.source.acquire()
            lent: Connection = await self.acquired.__aenter__()
            return lent
        return self.source

    async def __aexit__(self, *exc: object) -> None:
        if self.acquired is not None:
            await self.acquired.__aexit__(*exc)


async def replay_balances(
    partitions: LedgerPartitions,
    at: datetime,
    account_id: str | None = None,
    use_snapshot: bool = True,
    progress: Progress | None = None,
) -> Replay:
    """Every account (or one) at `at`, summed over every ledger server's streams."""
    assert at.tzinfo is not None, "replay moments carry a timezone"
    if account_id is not None:
        return await _replay_account(partitions, at, account_id, use_snapshot, progress)

    async def one(partition: Partition) -> StreamSums:
        assert partition.pool is not None
        return await stream_sums(partition.pool, partition.streams, at, use_snapshot, progress)

    sums = await partitions.each(one)
    with collector_paused():
        rows = [rows for name in sorted(sums) for rows in sums[name].streams.values()]
        return _merge(at, {name: found.snapshot_id for name, found in sums.items()}, rows)


async def _replay_account(
    partitions: LedgerPartitions, at: datetime, account_id: str, use_snapshot: bool, progress: Progress | None
) -> Replay:
    async def one(partition: Partition) -> tuple[int | None, list[asyncpg.Record]]:
        async with partition.connection() as connection:
            snapshot = await store.latest_snapshot(connection, at, partition.streams) if use_snapshot else None
            found = await store.replay_account(connection, at, snapshot, account_id, partition.streams)
            return (snapshot[0] if snapshot else None), found

    answers = await partitions.each(one)
    replay = _merge(at, {name: answer[0] for name, answer in answers.items()}, [a[1] for a in answers.values()])
    if progress is not None:
        progress(replay.events)
    return replay


async def stream_sums(
    source: Source,
    streams: Sequence[str],
    at: datetime,
    use_snapshot: bool = True,
    progress: Progress | None = None,
    whole_balances: bool = True,
) -> StreamSums:
    """One server's streams at `at`, from its latest usable snapshot (`whole_balances` False:
    only one of per-stream sums). Given a pool, the streams are read at once; given a
    connection, one after another in it (a snapshot reads them in one transaction)."""
    async with _Lease(source) as connection:
        snapshot = await store.latest_snapshot(connection, at, streams, whole_balances) if use_snapshot else None
        snapshot_id, since = (snapshot[0], snapshot[1]) if snapshot else (None, BEFORE_TIME)
        starts = await store.stream_starts(connection, snapshot_id, streams)

    async def stream(name: str, after: int, head: int) -> list[asyncpg.Record]:
        async with _Lease(source) as connection:
            rows = await store.stream_tail(connection, name, after, at, head, since, snapshot_id)
        if progress is not None:
            progress(sum(row[5] for row in rows))
        return rows

    if isinstance(source, asyncpg.Pool):  # every stream at once, one connection each
        per_stream = await asyncio.gather(*(stream(*start) for start in starts))
    else:
        per_stream = [await stream(*start) for start in starts]
    return StreamSums(snapshot_id, {start[0]: rows for start, rows in zip(starts, per_stream, strict=True)})


@contextmanager
def collector_paused() -> Iterator[None]:
    """The cyclic garbage collector off while a merge makes a few hundred thousand acyclic
    objects (it would scan them again and again: a third of a replay's time); no await runs
    inside, so nothing else in the process is held without it."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _merge(at: datetime, snapshots: Mapping[str, int | None], per_stream: Iterable[list[asyncpg.Record]]) -> Replay:
    """Rows (account, currency, balance, reserved, version, events) of every stream as one row
    per account: an account with rows in several streams has them summed."""
    rows: dict[str, Any] = {}
    events = 0
    for stream_rows in per_stream:
        these = {row[0]: row for row in stream_rows}  # one stream holds an account once
        events += sum(row[5] for row in stream_rows)
        both = {account: rows[account] for account in these.keys() & rows.keys()}
        rows.update(these)
        for account, earlier in both.items():
            row = these[account]
            rows[account] = (
                account,
                row[1],
                row[2] + earlier[2],
                row[3] + earlier[3],
                max(row[4], earlier[4]),
                row[5] + earlier[5],
            )
    impossible = [account for account, row in rows.items() if not 0 <= row[3] <= row[2]]
    assert not impossible, f"replay gives {impossible[:5]} an impossible balance"
    return Replay(at, dict(snapshots), Balances(rows), events)
