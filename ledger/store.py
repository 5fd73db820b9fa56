"""SQL for the ledger database."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import asyncpg

from ledger.chain import GENESIS, LedgerEvent
from shards.pool import Connection

EVENT_COLUMNS = (
    "stream, position, source_event_id, transaction_id, account_id, version, kind, amount, reserved_delta, "
    "balance_after, reserved_after, currency, created_at, prev_hash, hash"
)
PAGE_SIZE_MAX = 1000

LOCK_HEAD = "SELECT position, hash FROM ledger_heads WHERE stream = $1 FOR UPDATE"
CREATE_HEAD = "INSERT INTO ledger_heads (stream, position, hash) VALUES ($1, 0, $2) ON CONFLICT (stream) DO NOTHING"
SET_HEAD = "UPDATE ledger_heads SET position = $2, hash = $3 WHERE stream = $1"
EXISTING_VERSIONS = """
SELECT e.account_id, e.version FROM ledger_events e
JOIN unnest($1::text[], $2::bigint[]) AS k(account_id, version)
  ON e.account_id = k.account_id AND e.version = k.version
"""
APPEND_EVENTS = f"""
INSERT INTO ledger_events ({EVENT_COLUMNS}, visible_at)
SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::uuid[], $5::text[], $6::bigint[], $7::text[],
                     $8::bigint[], $9::bigint[], $10::bigint[], $11::bigint[], $12::text[], $13::timestamptz[],
                     $14::bytea[], $15::bytea[], $16::timestamptz[])
"""
# The visible_at of the version before each account's first one in a batch.
PRIOR_VISIBLE = """
SELECT e.account_id, e.visible_at FROM ledger_events e
JOIN unnest($1::text[], $2::bigint[]) AS k(account_id, version)
  ON e.account_id = k.account_id AND e.version = k.version
"""
STREAMS = "SELECT DISTINCT stream FROM ledger_events ORDER BY stream"
EVENT_COUNT = "SELECT coalesce(sum(position), 0)::bigint FROM ledger_heads"
STREAM_PAGE = f"""
SELECT {EVENT_COLUMNS} FROM ledger_events WHERE stream = $1 AND position > $2 ORDER BY position LIMIT $3
"""
ACCOUNT_PAGE = f"""
SELECT {EVENT_COLUMNS} FROM ledger_events WHERE account_id = $1 AND version > $2 ORDER BY version LIMIT $3
"""
LATEST_SNAPSHOT = """
SELECT snapshot_id, taken_at FROM ledger_snapshots WHERE taken_at <= $1 ORDER BY taken_at DESC, snapshot_id DESC LIMIT 1
"""
# Where a replay from snapshot $1 reads each stream: after `position`, where every event
# after `head` is new to the snapshot (0, 0: a stream it does not know, or no snapshot).
STREAM_STARTS = """
SELECT h.stream, coalesce(p.position, 0) AS position, coalesce(p.head, 0) AS head FROM ledger_heads h
LEFT JOIN ledger_snapshot_streams p ON p.stream = h.stream AND p.snapshot_id = $1
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
# One account at moment $1 from snapshot $2: its events by the (account, version) index.
REPLAY_ACCOUNT = """
WITH snap AS (
    SELECT account_id, currency, balance, reserved, version FROM ledger_snapshot_balances
    WHERE snapshot_id = $2 AND account_id = $3
), moved AS (
    SELECT e.account_id, min(e.currency) AS currency, sum(e.amount)::bigint AS amount,
           sum(e.reserved_delta)::bigint AS reserved_delta, max(e.version) AS version, count(*) AS events
    FROM ledger_events e
    WHERE e.account_id = $3 AND e.version > coalesce((SELECT version FROM snap), 0) AND e.visible_at <= $1
    GROUP BY e.account_id
)
SELECT coalesce(m.account_id, s.account_id) AS account_id, coalesce(m.currency, s.currency) AS currency,
       coalesce(s.balance, 0) + coalesce(m.amount, 0) AS balance,
       coalesce(s.reserved, 0) + coalesce(m.reserved_delta, 0) AS reserved,
       coalesce(m.version, s.version) AS version, coalesce(m.events, 0) AS events
FROM moved m FULL JOIN snap s ON s.account_id = m.account_id
"""
INSERT_SNAPSHOT = """
INSERT INTO ledger_snapshots (taken_at, accounts, digest) VALUES ($1, $2, $3) RETURNING snapshot_id
"""
INSERT_SNAPSHOT_BALANCES = """
INSERT INTO ledger_snapshot_balances (snapshot_id, account_id, currency, balance, reserved, version, stream)
SELECT $1, * FROM unnest($2::text[], $3::text[], $4::bigint[], $5::bigint[], $6::bigint[], $7::text[])
"""
INSERT_SNAPSHOT_STREAMS = """
INSERT INTO ledger_snapshot_streams (snapshot_id, stream, position, head)
SELECT $1, * FROM unnest($2::text[], $3::bigint[], $4::bigint[])
"""
SNAPSHOT = "SELECT snapshot_id, taken_at, accounts, digest FROM ledger_snapshots WHERE snapshot_id = $1"
SNAPSHOT_BY_DIGEST = "SELECT snapshot_id FROM ledger_snapshots WHERE digest = $1"
SNAPSHOT_STREAMS = "SELECT stream, position, head FROM ledger_snapshot_streams WHERE snapshot_id = $1 ORDER BY stream"
SNAPSHOT_BALANCES = """
SELECT account_id, currency, balance, reserved, version, stream FROM ledger_snapshot_balances
WHERE snapshot_id = $1 AND account_id > $2 ORDER BY account_id LIMIT $3
"""


def event_from_row(row: asyncpg.Record) -> LedgerEvent:
    fields: dict[str, Any] = dict(row.items())
    fields["prev_hash"], fields["hash"] = bytes(fields["prev_hash"]), bytes(fields["hash"])
    return LedgerEvent(**fields)


async def lock_head(connection: Connection, stream: str) -> tuple[int, bytes]:
    await connection.execute(CREATE_HEAD, stream, GENESIS)
    row = await connection.fetchrow(LOCK_HEAD, stream)
    assert row is not None, f"the head of {stream} was created just before"
    return row["position"], bytes(row["hash"])


async def set_head(connection: Connection, stream: str, position: int, hash_: bytes) -> None:
    await connection.execute(SET_HEAD, stream, position, hash_)


async def existing_versions(connection: Connection, keys: list[tuple[str, int]]) -> set[tuple[str, int]]:
    rows = await connection.fetch(EXISTING_VERSIONS, [k[0] for k in keys], [k[1] for k in keys])
    return {(row["account_id"], row["version"]) for row in rows}


async def append_events(connection: Connection, events: list[LedgerEvent], visible_at: list[datetime]) -> None:
    """`visible_at[i]` is events[i]'s (visible_at_of)."""
    if not events:
        return
    assert len(visible_at) == len(events)
    columns = [field.strip() for field in EVENT_COLUMNS.split(",")]
    await connection.execute(APPEND_EVENTS, *([getattr(e, column) for e in events] for column in columns), visible_at)


async def visible_at_of(connection: Connection, events: list[LedgerEvent]) -> list[datetime]:
    """Each event's visible_at: the running maximum of its account's created_at in version
    order, carried on from the account's version before this batch."""
    first: dict[str, int] = {}
    for event in events:
        first.setdefault(event.account_id, event.version)
    wanted = [(account, version - 1) for account, version in first.items() if version > 1]
    rows = await connection.fetch(PRIOR_VISIBLE, [w[0] for w in wanted], [w[1] for w in wanted]) if wanted else []
    running: dict[str, datetime] = {row["account_id"]: row["visible_at"] for row in rows}
    found = []
    for event in events:
        before = running.get(event.account_id)
        moment = event.created_at if before is None or event.created_at > before else before
        running[event.account_id] = moment
        found.append(moment)
    return found


async def event_count(connection: Connection) -> int:
    """Every event in the ledger (each stream's head position): cheap, for progress."""
    return int(await connection.fetchval(EVENT_COUNT))


async def streams(connection: Connection) -> list[str]:
    return [row["stream"] for row in await connection.fetch(STREAMS)]


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


async def account_events(connection: Connection, account_id: str, after_version: int, limit: int) -> list[LedgerEvent]:
    assert 1 <= limit <= PAGE_SIZE_MAX, f"limit must be 1..{PAGE_SIZE_MAX}"
    return [event_from_row(row) for row in await connection.fetch(ACCOUNT_PAGE, account_id, after_version, limit)]


async def latest_snapshot(connection: Connection, at: datetime) -> tuple[int, datetime] | None:
    row = await connection.fetchrow(LATEST_SNAPSHOT, at)
    return None if row is None else (row["snapshot_id"], row["taken_at"])


async def replay_account(
    connection: Connection, at: datetime, snapshot_id: int | None, account_id: str
) -> list[asyncpg.Record]:
    return await connection.fetch(REPLAY_ACCOUNT, at, snapshot_id, account_id)


async def stream_starts(connection: Connection, snapshot_id: int | None) -> list[tuple[str, int, int]]:
    return [(row[0], row[1], row[2]) for row in await connection.fetch(STREAM_STARTS, snapshot_id)]


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
) -> int:
    """positions: stream -> (position, head); balances: (account_id, currency, balance,
    reserved, version, stream) rows."""
    snapshot_id = await connection.fetchval(INSERT_SNAPSHOT, taken_at, len(balances), digest)
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
