"""SQL for a shard's outbox: what the relay reads and, once it is in the ledger, deletes."""

from __future__ import annotations

import asyncpg

from shards.arrays import int_array
from shards.pool import Connection

OUTBOX_COLUMNS = (
    "event_id, transaction_id, account_id, version, kind, amount, reserved_delta, balance_after, "
    "reserved_after, currency, created_at"
)
SELECT_OUTBOX = f"SELECT {OUTBOX_COLUMNS} FROM outbox ORDER BY event_id LIMIT $1"
SELECT_ACCOUNT_OUTBOX = (
    f"SELECT {OUTBOX_COLUMNS} FROM outbox WHERE account_id = ANY($1::text[]) ORDER BY account_id, version"
)
DELETE_OUTBOX = "DELETE FROM outbox WHERE event_id = ANY($1::bigint[])"
# An outbox moment as the chain writes it (UTC, microseconds): text of that form sorts as time.
MOMENT = """to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')"""
# What the relay reads of a row: its id, account and version, its moment, and every hashed
# field after stream and position as one text, \x1f between them (ledger/chain.py).
SELECT_FOR_RELAY = f"""
SELECT event_id, account_id, version, moment,
       concat_ws(E'\\x1f', event_id, transaction_id, account_id, version, kind, amount, reserved_delta,
                 balance_after, reserved_after, currency, moment) AS hashed
FROM (SELECT *, {MOMENT} AS moment FROM outbox ORDER BY event_id LIMIT $1) AS waiting
"""
DELETE_RELAYED = "DELETE FROM outbox WHERE event_id IN (SELECT unnest(($1::text)::bigint[]))"
OUTBOX_LAG = """
SELECT count(*) AS events, coalesce(extract(epoch FROM now() - min(created_at)) * 1000, 0)::bigint AS oldest_ms
FROM outbox
"""


async def select_outbox(connection: Connection, limit: int) -> list[asyncpg.Record]:
    return await connection.fetch(SELECT_OUTBOX, limit)


async def select_account_outbox(connection: Connection, account_ids: list[str]) -> list[asyncpg.Record]:
    return await connection.fetch(SELECT_ACCOUNT_OUTBOX, account_ids)


async def delete_outbox(connection: Connection, event_ids: list[int]) -> None:
    await connection.execute(DELETE_OUTBOX, event_ids)


async def select_relay_rows(connection: Connection, limit: int) -> list[tuple[int, str, int, str, str]]:
    """(event_id, account_id, version, moment, hashed) of the first `limit` rows (shards/contract.py)."""
    return [(row[0], row[1], row[2], row[3], row[4]) for row in await connection.fetch(SELECT_FOR_RELAY, limit)]


async def delete_relayed(connection: Connection, event_ids: list[int]) -> None:
    await connection.execute(DELETE_RELAYED, int_array(event_ids))


async def outbox_lag(connection: Connection) -> tuple[int, int]:
    row = await connection.fetchrow(OUTBOX_LAG)
    assert row is not None, "an aggregate is one row"
    return row["events"], row["oldest_ms"]
