"""Balances rebuilt from the ledger at any moment, starting from the latest snapshot before it.

A whole replay reads, per stream, only the tail after the snapshot's position there, and
aggregates it in the database (one GROUP BY per stream); given a pool, the streams are read
at once, on connections of their own. One account is read by its (account, version) index.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

import asyncpg

from ledger import store
from shards.pool import Connection

# "Now and everything relayed": later than any event can be.
END_OF_TIME = datetime(9999, 1, 1, tzinfo=UTC)
# Before any event: the moment of "no snapshot".
BEFORE_TIME = datetime(1, 1, 2, tzinfo=UTC)

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
    snapshot_id: int | None  # where the replay started; None: from the first event
    balances: Mapping[str, ReplayedBalance]
    events: int = 0  # events read past the snapshot
    # Whole replays: the stream of each account's latest event counted (what a snapshot keeps).
    streams: dict[str, str] = field(default_factory=dict, compare=False, repr=False)


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
    source: Source,
    at: datetime,
    account_id: str | None = None,
    use_snapshot: bool = True,
    progress: Progress | None = None,
) -> Replay:
    assert at.tzinfo is not None, "replay moments carry a timezone"
    async with _Lease(source) as connection:
        snapshot = await store.latest_snapshot(connection, at) if use_snapshot else None
        snapshot_id, since = (snapshot[0], snapshot[1]) if snapshot else (None, BEFORE_TIME)
        if account_id is not None:
            rows = await store.replay_account(connection, at, snapshot_id, account_id)
            balances = {r[0]: ReplayedBalance(r[0], r[1], r[2], r[3], r[4]) for r in rows}
            events = sum(r[5] for r in rows)
            if progress is not None:
                progress(events)
            return Replay(at, snapshot_id, balances, events)
        starts = await store.stream_starts(connection, snapshot_id)

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
    with collector_paused():
        return _merge(at, snapshot_id, [start[0] for start in starts], per_stream)


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


def _merge(at: datetime, snapshot_id: int | None, names: list[str], per_stream: list[list[asyncpg.Record]]) -> Replay:
    """Each stream's rows (account, currency, balance, reserved, version, events) as one row
    per account; an account whose slot moved has rows in two streams, summed."""
    rows: dict[str, Any] = {}
    streams: dict[str, str] = {}
    events = 0
    for name, stream_rows in zip(names, per_stream, strict=True):
        these = {row[0]: row for row in stream_rows}
        events += sum(row[5] for row in stream_rows)
        moved = {account: (rows[account], streams[account]) for account in these.keys() & rows.keys()}
        rows.update(these)
        streams.update(dict.fromkeys(these, name))
        for account, (earlier, earlier_stream) in moved.items():
            row = these[account]
            if earlier[4] > row[4]:  # its latest event is in the stream read before
                streams[account] = earlier_stream
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
    return Replay(at, snapshot_id, Balances(rows), events, streams)
