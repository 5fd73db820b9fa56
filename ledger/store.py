"""SQL for the ledger database."""
from __future__ import annotations

from datetime import datetime
from typing import Any, AsyncIterator

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
INSERT INTO ledger_events ({EVENT_COLUMNS})
SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::uuid[], $5::text[], $6::bigint[], $7::text[],
                     $8::bigint[], $9::bigint[], $10::bigint[], $11::bigint[], $12::text[], $13::timestamptz[],
                     $14::bytea[], $15::bytea[])
"""
STREAMS = "SELECT DISTINCT stream FROM ledger_events ORDER BY stream"
STREAM_PAGE = f"""
SELECT {EVENT_COLUMNS} FROM ledger_events WHERE stream = $1 AND position > $2 ORDER BY position LIMIT $3
"""
ACCOUNT_PAGE = f"""
SELECT {EVENT_COLUMNS} FROM ledger_events WHERE account_id = $1 AND version > $2 ORDER BY version LIMIT $3
"""
LATEST_SNAPSHOT = """
SELECT snapshot_id, taken_at FROM ledger_snapshots WHERE taken_at <= $1 ORDER BY taken_at DESC, snapshot_id DESC LIMIT 1
"""
# Balances at moment $1, from snapshot $2 (or none) onward; $3 limits to one account.
# An account's events count in version order while the running maximum of their
# created_at stays <= $1: always a state the account really had, even where a
# transaction's start time is not monotonic in its version.
REPLAY = """
WITH snap AS (
    SELECT account_id, currency, balance, reserved, version FROM ledger_snapshot_balances
    WHERE snapshot_id = $2 AND ($3::text IS NULL OR account_id = $3)
), ev AS (
    SELECT e.account_id, e.currency, e.version, e.amount, e.reserved_delta,
           max(e.created_at) OVER (PARTITION BY e.account_id ORDER BY e.version) AS envelope
    FROM ledger_events e LEFT JOIN snap s ON s.account_id = e.account_id
    WHERE e.version > coalesce(s.version, 0) AND ($3::text IS NULL OR e.account_id = $3)
), moved AS (
    SELECT account_id, min(currency) AS currency, sum(amount)::bigint AS amount,
           sum(reserved_delta)::bigint AS reserved_delta, max(version) AS version, count(*) AS events
    FROM ev WHERE envelope <= $1 GROUP BY account_id
)
SELECT coalesce(m.account_id, s.account_id) AS account_id, coalesce(m.currency, s.currency) AS currency,
       coalesce(s.balance, 0) + coalesce(m.amount, 0) AS balance,
       coalesce(s.reserved, 0) + coalesce(m.reserved_delta, 0) AS reserved,
       coalesce(m.version, s.version) AS version, coalesce(m.events, 0) AS events
FROM moved m FULL JOIN snap s ON s.account_id = m.account_id
ORDER BY 1
"""
INSERT_SNAPSHOT = "INSERT INTO ledger_snapshots (taken_at, accounts) VALUES ($1, $2) RETURNING snapshot_id"
INSERT_SNAPSHOT_BALANCES = """
INSERT INTO ledger_snapshot_balances (snapshot_id, account_id, currency, balance, reserved, version)
SELECT $1, * FROM unnest($2::text[], $3::text[], $4::bigint[], $5::bigint[], $6::bigint[])
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


async def append_events(connection: Connection, events: list[LedgerEvent]) -> None:
    if not events:
        return
    columns = [field.strip() for field in EVENT_COLUMNS.split(",")]
    await connection.execute(APPEND_EVENTS, *([getattr(e, column) for e in events] for column in columns))


async def streams(connection: Connection) -> list[str]:
    return [row["stream"] for row in await connection.fetch(STREAMS)]


async def stream_events(connection: Connection, stream: str, page_size: int = PAGE_SIZE_MAX) -> AsyncIterator[list[LedgerEvent]]:
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


async def replay(connection: Connection, at: datetime, snapshot_id: int | None, account_id: str | None) -> list[asyncpg.Record]:
    return await connection.fetch(REPLAY, at, snapshot_id, account_id)


async def insert_snapshot(connection: Connection, taken_at: datetime, balances: list[asyncpg.Record]) -> int:
    snapshot_id = await connection.fetchval(INSERT_SNAPSHOT, taken_at, len(balances))
    await connection.execute(
        INSERT_SNAPSHOT_BALANCES, snapshot_id, [b["account_id"] for b in balances], [b["currency"] for b in balances],
        [b["balance"] for b in balances], [b["reserved"] for b in balances], [b["version"] for b in balances],
    )
    return snapshot_id



