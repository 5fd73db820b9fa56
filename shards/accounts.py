"""SQL for the accounts table."""

from __future__ import annotations

import asyncpg

from core.domain.accounts import Account
from shards.arrays import text_array
from shards.errors import AccountsMoved
from shards.pool import Connection

ACCOUNT_COLUMNS = "account_id, owner, currency, balance, reserved, status, version"  # Account's field order

# The fence on creation: only a shard that owns the account's slot (or the shard the
# directory pins it to, $4) creates it. FOR SHARE makes a slot migration, which deletes the
# shard_slots row, wait for creations in flight, and a creation after it see no row.
INSERT_ACCOUNT = f"""
INSERT INTO accounts (account_id, owner, currency)
SELECT $1, $2, $3
WHERE $4::boolean OR EXISTS (SELECT 1 FROM shard_slots WHERE slot = wallet_slot($1) FOR SHARE)
ON CONFLICT (account_id) DO NOTHING
RETURNING {ACCOUNT_COLUMNS}
"""

SELECT_ACCOUNT = f"SELECT {ACCOUNT_COLUMNS}, placement FROM accounts WHERE account_id = $1"

# Sorted lock order: two batches on one shard cannot deadlock on each other. The fence on
# every balance change: a locked row that is not live here refuses the whole batch. A
# migration marks rows moved under the same row locks, and a waiter re-reads the newest
# row version once the lock is granted, so it cannot act on a row that left.
LOCK_ACCOUNTS = f"""
SELECT {ACCOUNT_COLUMNS}, placement FROM accounts
WHERE account_id IN (SELECT id FROM unnest(($1::text)::text[]) AS wanted(id))  -- one literal: shards/arrays.py
ORDER BY account_id
FOR UPDATE
"""

ACCOUNT_EXISTS = "SELECT EXISTS (SELECT 1 FROM accounts WHERE account_id = $1)"

SET_ACCOUNT_STATUS = f"""
UPDATE accounts SET status = $2, updated_at = now()
WHERE account_id = $1 AND placement = 'live'
RETURNING {ACCOUNT_COLUMNS}
"""

SUM_BALANCES = """
SELECT coalesce(sum(balance), 0)::bigint, coalesce(sum(reserved), 0)::bigint, count(*)
FROM accounts WHERE placement = 'live'
"""


def account_from_row(row: asyncpg.Record) -> Account:
    """From a row whose first columns are ACCOUNT_COLUMNS, in that order (every query here)."""
    return Account(row[0], row[1], row[2], row[3], row[4], row[5], row[6])


async def insert_account(
    connection: Connection, account_id: str, owner: str, currency: str, pinned: bool = False
) -> Account | None:
    """The new account, or None if the id is taken or this shard does not own its slot
    (`pinned`: the directory places the account here, whatever its slot)."""
    row = await connection.fetchrow(INSERT_ACCOUNT, account_id, owner, currency, pinned)
    return None if row is None else account_from_row(row)


async def select_account(connection: Connection, account_id: str) -> Account | None:
    """None if there is no such account here; AccountsMoved if it lives elsewhere now."""
    row = await connection.fetchrow(SELECT_ACCOUNT, account_id)
    if row is None:
        return None
    if row["placement"] != "live":
        raise AccountsMoved([account_id])
    return account_from_row(row)


async def account_exists(connection: Connection, account_id: str) -> bool:
    """Any row, live or not: the id has been used on this shard."""
    return bool(await connection.fetchval(ACCOUNT_EXISTS, account_id))


async def lock_accounts(connection: Connection, account_ids: list[str]) -> dict[str, Account]:
    rows = await connection.fetch(LOCK_ACCOUNTS, text_array(sorted(set(account_ids))))
    gone = [row["account_id"] for row in rows if row["placement"] != "live"]
    if gone:
        raise AccountsMoved(gone)
    return {row[0]: account_from_row(row) for row in rows}


async def update_account_status(connection: Connection, account_id: str, status: str) -> Account | None:
    row = await connection.fetchrow(SET_ACCOUNT_STATUS, account_id, status)
    return None if row is None else account_from_row(row)


async def sum_balances(connection: Connection) -> tuple[int, int, int]:
    """(sum of balance, sum of reserved, account count) on one shard."""
    row = await connection.fetchrow(SUM_BALANCES)
    assert row is not None, "an aggregate is one row"
    return row[0], row[1], row[2]
