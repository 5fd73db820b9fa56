"""SQL for slot ownership and for moving a slot's accounts between shards.

A slot migration copies the slot's accounts to the target as `incoming` rows while
transfers keep flowing, then flips: on the source, in one transaction, it deletes the
slot from shard_slots, locks the slot's accounts and marks them `moved`; on the target,
it writes their final state as `live` and claims the slot. Every write path refuses rows
that are not live (shards/accounts.py), so an account is never live on two shards.
"""

from __future__ import annotations

import asyncpg

from shards.pool import Connection

# One page of the live copy. The flip itself locks the whole slot: slots are small
# (accounts / 4096), so it is short.
COPY_PAGE_MAX = 5_000
# How long the flip waits for a row lock (a prepared 2PC branch holds its rows until
# recovery finishes it) before it gives up and is tried again.
FLIP_LOCK_TIMEOUT = "10s"

MOVED_COLUMNS = "account_id, owner, currency, balance, reserved, status, version, created_at"

OWNED_SLOTS = "SELECT slot FROM shard_slots ORDER BY slot"

OWNS_SLOT = "SELECT EXISTS (SELECT 1 FROM shard_slots WHERE slot = $1)"

# $2: accounts the directory pins to this shard; they stay whatever their slot does.
SELECT_SLOT_PAGE = f"""
SELECT {MOVED_COLUMNS} FROM accounts
WHERE slot = $1 AND placement = $2 AND account_id > $3 AND NOT (account_id = ANY($4::text[]))
ORDER BY account_id LIMIT $5
"""

RELEASE_SLOT = "DELETE FROM shard_slots WHERE slot = $1 RETURNING slot"

LOCK_SLOT_ACCOUNTS = f"""
SELECT {MOVED_COLUMNS} FROM accounts
WHERE slot = $1 AND placement = 'live' AND NOT (account_id = ANY($2::text[]))
ORDER BY account_id
FOR UPDATE
"""

MARK_MOVED = """
UPDATE accounts SET placement = 'moved', updated_at = now()
WHERE account_id = ANY($1::text[]) AND placement = 'live'
"""

# Unfinished TC/C or Saga transfers that touch any of the accounts: their branches must
# finish where they started before the accounts move (the flip waits for them).
COUNT_UNFINISHED_TOUCHING = """
SELECT count(*) FROM phase_state
WHERE second_state <> 'done' AND (from_account = ANY($1::text[]) OR to_account = ANY($1::text[]))
"""

# Never overwrites a live row: a row here is either absent, incoming (an earlier copy) or
# moved (the account left this shard before and comes back).
UPSERT_ACCOUNTS = """
INSERT INTO accounts (account_id, owner, currency, balance, reserved, status, version, created_at, placement)
SELECT d.*, $9 FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bigint[], $6::text[],
                           $7::bigint[], $8::timestamptz[]) AS d
ON CONFLICT (account_id) DO UPDATE
SET owner = EXCLUDED.owner, currency = EXCLUDED.currency, balance = EXCLUDED.balance,
    reserved = EXCLUDED.reserved, status = EXCLUDED.status, version = EXCLUDED.version,
    created_at = EXCLUDED.created_at, placement = EXCLUDED.placement, updated_at = now()
WHERE accounts.placement <> 'live'
RETURNING 1
"""

CLAIM_SLOT = "INSERT INTO shard_slots (slot) VALUES ($1) ON CONFLICT (slot) DO NOTHING"


async def owned_slots(connection: Connection) -> list[int]:
    return [row["slot"] for row in await connection.fetch(OWNED_SLOTS)]


async def owns_slot(connection: Connection, slot: int) -> bool:
    return bool(await connection.fetchval(OWNS_SLOT, slot))


async def select_slot_page(
    connection: Connection, slot: int, placement: str, after: str, pinned: list[str]
) -> list[asyncpg.Record]:
    return await connection.fetch(SELECT_SLOT_PAGE, slot, placement, after, pinned, COPY_PAGE_MAX)


async def release_slot(connection: Connection, slot: int) -> bool:
    """In the flip's transaction: the slot is no longer this shard's. Waits for account
    creations in flight (they hold the row FOR SHARE)."""
    await connection.execute(f"SET LOCAL lock_timeout = '{FLIP_LOCK_TIMEOUT}'")
    return await connection.fetchval(RELEASE_SLOT, slot) is not None


async def lock_slot_accounts(connection: Connection, slot: int, pinned: list[str]) -> list[asyncpg.Record]:
    return await connection.fetch(LOCK_SLOT_ACCOUNTS, slot, pinned)


async def mark_moved(connection: Connection, account_ids: list[str]) -> int:
    status = await connection.execute(MARK_MOVED, account_ids)
    return int(status.split()[-1])


async def count_unfinished_touching(connection: Connection, account_ids: list[str]) -> int:
    count: int = await connection.fetchval(COUNT_UNFINISHED_TOUCHING, account_ids)
    return count


async def upsert_accounts(connection: Connection, rows: list[asyncpg.Record], placement: str) -> int:
    assert placement in ("incoming", "live"), "a copy lands incoming, the flip's final copy live"
    if not rows:
        return 0
    columns = [[row[name] for row in rows] for name in MOVED_COLUMNS.split(", ")]
    written = await connection.fetch(UPSERT_ACCOUNTS, *columns, placement)
    return len(written)


async def claim_slot(connection: Connection, slot: int) -> None:
    await connection.execute(CLAIM_SLOT, slot)
