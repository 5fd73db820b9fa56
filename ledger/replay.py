"""Balances rebuilt from the ledger at any moment, starting from the latest snapshot before it.

A whole replay reads, per stream, only the tail after the snapshot's position there, and
aggregates it in the database (one GROUP BY per stream); given a pool, the streams are read
at once, on connections of their own. One account is read by its (account, version) index.
"""
from __future__ import annotations

import asyncio
import gc
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Iterator, NamedTuple

import asyncpg

from ledger import store
from shards.pool import Connection

# "Now and everything relayed": later than any event can be.
END_OF_TIME = datetime(9999, 1, 1, tzinfo=timezone.utc)
# Before any event: the moment of "no snapshot".
BEFORE_TIME = datetime(1, 1, 2, tzinfo=timezone.utc)

Source = Connection | asyncpg.Pool
Progress = Callable[[int], None]  # called with the events just counted


class ReplayedBalance(NamedTuple):  # a tuple: a replay makes one per account
    account_id: str
    currency: str
    balance: int
    reserved: int
    version: int


@dataclass(frozen=True)
class Replay:
    at: datetime
    snapshot_id: int | None  # where the replay started; None: from the first event
    balances: dict[str, ReplayedBalance]
    events: int = 0  # events read past the snapshot


class _Lease:
    """A connection from a pool, or the one connection given."""

    def __init__(self, source: Source) -> None:
        self.source = source
        self.acquired: Any = None

    async def __aenter__(self) -> Connection:
        if isinstance(self.source, asyncpg.Pool):
            self.acquired = self.source.acquire()
            return await self.acquired.__aenter__()
        return self.source

    async def __aexit__(self, *exc: object) -> None:
        if self.acquired is not None:
            await self.acquired.__aexit__(*exc)


async def replay_balances(source: Source, at: datetime, account_id: str | None = None, use_snapshot: bool = True,
                          progress: Progress | None = None) -> Replay:
    assert at.tzinfo is not None, "replay moments carry a timezone"
    async with _Lease(source) as connection:
        snapshot = await store.latest_snapshot(connection, at) if use_snapshot else None
        snapshot_id, since = (snapshot[0], snapshot[1]) if snapshot else (None, BEFORE_TIME)
        if account_id is not None:
            rows = await store.replay_account(connection, at, snapshot_id, account_id)
            balances = {r[0]: ReplayedBalance(r[0], r[1], r[2], r[3], r[4]) for r in rows}
            return Replay(at, snapshot_id, balances, sum(r[5] for r in rows))
        starts = await store.stream_starts(connection, snapshot_id)
        base = await store.snapshot_balances(connection, snapshot_id) if snapshot_id is not None else []

    async def tail(stream: str, after: int, head: int) -> list[asyncpg.Record]:
        async with _Lease(source) as connection:
            rows = await store.stream_tail(connection, stream, after, at, head, since)
        if progress is not None:
            progress(sum(row[5] for row in rows))
        return rows

    if isinstance(source, asyncpg.Pool):
        tails = await asyncio.gather(*(tail(*start) for start in starts))
    else:
        tails = [await tail(*start) for start in starts]
    with collector_paused():
        return _merge(at, snapshot_id, base, tails)


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


def _merge(at: datetime, snapshot_id: int | None, base: list[asyncpg.Record],
           tails: list[list[asyncpg.Record]]) -> Replay:
    state: dict[str, list[Any]] = {r[0]: [r[1], r[2], r[3], r[4]] for r in base}  # currency, balance, reserved, version
    events = 0
    for rows in tails:
        for account, currency, amount, reserved_delta, version, count in rows:
            found = state.get(account)
            if found is None:
                state[account] = [currency, amount, reserved_delta, version]
            else:  # an account whose slot moved has events in two streams
                found[1] += amount
                found[2] += reserved_delta
                found[3] = max(found[3], version)
            events += count
    balances = {account: ReplayedBalance(account, *state[account]) for account in sorted(state)}
    for balance in balances.values():
        assert 0 <= balance.reserved <= balance.balance, f"replay gives {balance.account_id} an impossible balance"
    return Replay(at, snapshot_id, balances, events)
