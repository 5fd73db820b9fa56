"""SQL for the ledger database."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg

from ledger.chain import LedgerEvent
from shards.pool import Connection

EVENT_COLUMNS = (
    "stream, position, source_event_id, transaction_id, account_id, version, kind, amount, reserved_delta, "
    "balance_after, reserved_after, currency, created_at, prev_hash, hash"
)
PAGE_SIZE_MAX = 1000
# Before any event: the moment of "no snapshot".
BEFORE_TIME = datetime(1, 1, 2, tzinfo=UTC)

# Of these streams (those the topology puts on this server), the ones with events so far.
STREAMS_HELD = "SELECT stream FROM ledger_heads WHERE stream = ANY($1::text[]) AND position > 0 ORDER BY stream"
EVENT_COUNT = "SELECT coalesce(sum(position), 0)::bigint FROM ledger_heads WHERE stream = ANY($1::text[])"
STREAM_PAGE = f"""
SELECT {EVENT_COLUMNS} FROM ledger_events WHERE stream = $1 AND position > $2 ORDER BY position LIMIT $3
"""
ACCOUNT_PAGE = f"""
SELECT {EVENT_COLUMNS} FROM ledger_events
WHERE account_id = $1 AND version > $2 AND stream = ANY($4::text[]) ORDER BY version LIMIT $3
"""
# The latest snapshot at or before $1 that a replay of this server's streams ($2) may start
# from: one of per-stream partial sums always (a stream it does not cover is read from its
# start); one of whole balances (before partitions) only while every stream it covers is
# still here, since its balances sit under whichever stream held each account's latest event.
LATEST_SNAPSHOT = """
SELECT snapshot_id, taken_at FROM ledger_snapshots s
WHERE taken_at <= $1 AND (per_stream OR ($3 AND
      (SELECT array_agg(p.stream) FROM ledger_snapshot_streams p WHERE p.snapshot_id = s.snapshot_id) <@ $2::text[]))
ORDER BY taken_at DESC, snapshot_id DESC LIMIT 1
"""
# Where a replay from snapshot $1 reads each of these streams ($2): after `position`, where
# every event after `head` is new to the snapshot (0, 0: a stream it does not cover, or no snapshot).
STREAM_STARTS = """
SELECT s.stream, coalesce(p.position, 0) AS position, coalesce(p.head, 0) AS head
FROM unnest($2::text[]) AS s(stream)
LEFT JOIN ledger_snapshot_streams p ON p.stream = s.stream AND p.snapshot_id = $1
"""
# One stream's tail, per account: its events after position $2 visible at $3 that are not
# in the snapshot (of moment $5, whose head there was $4): past the head every event is new
# (one relayed late is there too), before it only those the snapshot's moment had not seen.
# visible_at is monotonic per account, so what counts is always a state the account had.
# (An account has one currency: grouping by it is a hash of bytes, where min() would
# compare every row's text under the collation.)
# Joined, in the database, with the snapshot's ($6) balances of the accounts whose latest
# event it holds in this stream: one row per account of the stream, its balance at $3.
STREAM_TAIL = """
WITH tail AS (
    SELECT account_id, currency, sum(amount)::bigint AS amount, sum(reserved_delta)::bigint AS reserved_delta,
           max(version) AS version, count(*) AS events
    FROM ledger_events
    WHERE stream = $1 AND position > $2 AND visible_at <= $3 AND (position > $4 OR visible_at > $5)
    GROUP BY account_id, currency
), base AS (
    SELECT account_id, currency, balance, reserved, version FROM ledger_snapshot_balances
    WHERE snapshot_id = $6 AND stream = $1
)
SELECT coalesce(t.account_id, b.account_id), coalesce(t.currency, b.currency),
       coalesce(b.balance, 0) + coalesce(t.amount, 0), coalesce(b.reserved, 0) + coalesce(t.reserved_delta, 0),
       greatest(b.version, t.version), coalesce(t.events, 0)
FROM tail t FULL JOIN base b ON b.account_id = t.account_id
"""
# A replay of a whole stream's tail, measured (bench/ledger_replay.py): enough memory to
# aggregate by hash without spilling, and never by sorting (the tail's size is misestimated
# through the OR above, and a sort of a million rows costs twice the hash); a plan for these
# positions (a scan of the stream from the start, or of its tail by the index); no JIT (it
# compiled for 90 ms of a 430 ms query) and no parallel workers (the streams already run at
# once, one connection each).
TAIL_SETTINGS = (
    "SET LOCAL work_mem = '256MB'; SET LOCAL plan_cache_mode = force_custom_plan; SET LOCAL jit = off; "
    "SET LOCAL max_parallel_workers_per_gather = 0; SET LOCAL enable_sort = off"
)
# Where a new snapshot at $3 stands in a stream read after position $2: up to the first
# event it leaves out, and the stream's end.
STREAM_POSITIONS = """
SELECT min(position) FILTER (WHERE visible_at > $3) - 1 AS position, max(position) AS head
FROM ledger_events WHERE stream = $1 AND position > $2
"""
# One account ($3) at moment $1 from snapshot $2 (taken at $5), over this server's streams ($4):
# its rows of the snapshot, summed, and its events each stream's tail counts (the same cut as
# STREAM_TAIL), found by the (account, version) index.
REPLAY_ACCOUNT = """
WITH cut AS (
    SELECT s.stream, coalesce(p.position, 0) AS position, coalesce(p.head, 0) AS head
    FROM unnest($4::text[]) AS s(stream)
    LEFT JOIN ledger_snapshot_streams p ON p.stream = s.stream AND p.snapshot_id = $2
), snap AS (
    SELECT account_id, min(currency) AS currency, sum(balance)::bigint AS balance,
           sum(reserved)::bigint AS reserved, max(version) AS version
    FROM ledger_snapshot_balances
    WHERE snapshot_id = $2 AND account_id = $3 AND stream = ANY($4::text[])
    GROUP BY account_id
), moved AS (
    SELECT e.account_id, min(e.currency) AS currency, sum(e.amount)::bigint AS amount,
           sum(e.reserved_delta)::bigint AS reserved_delta, max(e.version) AS version, count(*) AS events
    FROM ledger_events e JOIN cut c ON c.stream = e.stream
    WHERE e.account_id = $3 AND e.visible_at <= $1 AND e.position > c.position
      AND (e.position > c.head OR e.visible_at > $5)
    GROUP BY e.account_id
)
SELECT coalesce(m.account_id, s.account_id) AS account_id, coalesce(m.currency, s.currency) AS currency,
       coalesce(s.balance, 0) + coalesce(m.amount, 0) AS balance,
       coalesce(s.reserved, 0) + coalesce(m.reserved_delta, 0) AS reserved,
       greatest(m.version, s.version) AS version, coalesce(m.events, 0) AS events
FROM moved m FULL JOIN snap s ON s.account_id = m.account_id
"""
INSERT_SNAPSHOT = """
INSERT INTO ledger_snapshots (taken_at, accounts, digest, per_stream) VALUES ($1, $2, $3, $4) RETURNING snapshot_id
"""
INSERT_SNAPSHOT_BALANCES = """
INSERT INTO ledger_snapshot_balances (snapshot_id, account_id, currency, balance, reserved, version, stream)
SELECT $1, * FROM unnest($2::text[], $3::text[], $4::bigint[], $5::bigint[], $6::bigint[], $7::text[])
"""
INSERT_SNAPSHOT_STREAMS = """
INSERT INTO ledger_snapshot_streams (snapshot_id, stream, position, head)
SELECT $1, * FROM unnest($2::text[], $3::bigint[], $4::bigint[])
"""
SNAPSHOT = "SELECT snapshot_id, taken_at, accounts, digest, per_stream FROM ledger_snapshots WHERE snapshot_id = $1"
SNAPSHOT_BY_DIGEST = "SELECT snapshot_id FROM ledger_snapshots WHERE digest = $1"
SNAPSHOT_STREAMS = "SELECT stream, position, head FROM ledger_snapshot_streams WHERE snapshot_id = $1 ORDER BY stream"
SNAPSHOT_BALANCES = """
SELECT account_id, currency, balance, reserved, version, stream FROM ledger_snapshot_balances
WHERE snapshot_id = $1 AND (stream, account_id) > ($2, $3) ORDER BY stream, account_id LIMIT $4
"""


def event_from_row(row: asyncpg.Record) -> LedgerEvent:
    fields: dict[str, Any] = dict(row.items())
    fields["prev_hash"], fields["hash"] = bytes(fields["prev_hash"]), bytes(fields["hash"])
    return LedgerEvent(**fields)


async def event_count(connection: Connection, streams: Sequence[str]) -> int:
    """Every event of these streams (each one's head position): cheap, for progress."""
    return int(await connection.fetchval(EVENT_COUNT, list(streams)))


async def streams_held(connection: Connection, streams: Sequence[str]) -> list[str]:
    return [row["stream"] for row in await connection.fetch(STREAMS_HELD, list(streams))]


async def stream_events(
    connection: Connection, stream: str, page_size: int = PAGE_SIZE_MAX
) -> AsyncIterator[list[LedgerEvent]]:
    """A stream's events in position order, a bounded page at a time."""
    after = 0
    while True:
        rows = await connection.fetch(STREAM_PAGE, stream, after, page_size)
        if not rows:
            return
        page = [event_from_row(row) for row in rows]
        yield page
        after = page[-1].position


async def account_events(
    connection: Connection, streams: Sequence[str], account_id: str, after_version: int, limit: int
) -> list[LedgerEvent]:
    """The account's events in these streams after `after_version`, in version order."""
    assert 1 <= limit <= PAGE_SIZE_MAX, f"limit must be 1..{PAGE_SIZE_MAX}"
    rows = await connection.fetch(ACCOUNT_PAGE, account_id, after_version, limit, list(streams))
    return [event_from_row(row) for row in rows]


async def latest_snapshot(
    connection: Connection, at: datetime, streams: Sequence[str], whole_balances: bool = True
) -> tuple[int, datetime] | None:
    """The latest snapshot at or before `at` usable for these streams (`whole_balances`
    False: only one of per-stream sums)."""
    row = await connection.fetchrow(LATEST_SNAPSHOT, at, sorted(streams), whole_balances)
    return None if row is None else (row["snapshot_id"], row["taken_at"])


async def replay_account(
    connection: Connection,
    at: datetime,
    snapshot: tuple[int, datetime] | None,
    account_id: str,
    streams: Sequence[str],
) -> list[asyncpg.Record]:
    snapshot_id, since = snapshot if snapshot is not None else (None, BEFORE_TIME)
    return await connection.fetch(REPLAY_ACCOUNT, at, snapshot_id, account_id, list(streams), since)


async def stream_starts(
    connection: Connection, snapshot_id: int | None, streams: Sequence[str]
) -> list[tuple[str, int, int]]:
    rows = await connection.fetch(STREAM_STARTS, snapshot_id, list(streams))
    return [(row[0], row[1], row[2]) for row in rows]


async def stream_tail(
    connection: Connection, stream: str, after: int, at: datetime, head: int, since: datetime, snapshot_id: int | None
) -> list[asyncpg.Record]:
    """(account_id, currency, balance, reserved, version, events) of the stream's accounts."""
    async with connection.transaction():
        await connection.execute(TAIL_SETTINGS)
        return await connection.fetch(STREAM_TAIL, stream, after, at, head, since, snapshot_id)


async def stream_positions(
    connection: Connection, stream: str, after: int, at: datetime
) -> tuple[int | None, int | None]:
    row = await connection.fetchrow(STREAM_POSITIONS, stream, after, at)
    assert row is not None
    return row[0], row[1]


async def insert_snapshot(
    connection: Connection,
    taken_at: datetime,
    positions: dict[str, tuple[int, int]],
    balances: list[tuple[str, str, int, int, int, str]],
    digest: bytes,
    per_stream: bool = True,
) -> int:
    """positions: stream -> (position, head); balances: (account_id, currency, balance,
    reserved, version, stream) rows."""
    snapshot_id = await connection.fetchval(INSERT_SNAPSHOT, taken_at, len(balances), digest, per_stream)
    await connection.execute(
        INSERT_SNAPSHOT_STREAMS,
        snapshot_id,
        list(positions),
        [p[0] for p in positions.values()],
        [p[1] for p in positions.values()],
    )
    columns: list[list[object]] = [[], [], [], [], [], []]
    for row in balances:
        for column, value in zip(columns, row, strict=True):
            column.append(value)
    await connection.execute(INSERT_SNAPSHOT_BALANCES, snapshot_id, *columns)
    taken: int = snapshot_id
    return taken
