"""SQL for the accounts table."""
from __future__ import annotations

import asyncpg

from coordinator.domain import Account

ACCOUNT_COLUMNS = "account_id, owner, currency, balance, reserved, status, version"

INSERT_ACCOUNT = f"""
INSERT INTO accounts (account_id, owner, currency)
VALUES ($1, $2, $3)
ON CONFLICT (account_id) DO NOTHING
RETURNING {ACCOUNT_COLUMNS}
"""

SELECT_ACCOUNT = f"SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE account_id = $1"

# Sorted lock order: two batches on one shard cannot deadlock on each other.
LOCK_ACCOUNTS = f"""
SELECT {ACCOUNT_COLUMNS} FROM accounts
WHERE account_id = ANY($1::text[])
ORDER BY account_id
FOR UPDATE
"""

SET_ACCOUNT_STATUS = f"""
UPDATE accounts SET status = $2, updated_at = now()
WHERE account_id = $1
RETURNING {ACCOUNT_COLUMNS}
"""

SUM_BALANCES = "SELECT coalesce(sum(balance), 0)::bigint, coalesce(sum(reserved), 0)::bigint, count(*) FROM accounts"


def account_from_row(row: asyncpg.Record) -> Account:
    return Account(
        account_id=row["account_id"],
        owner=row["owner"],
        currency=row["currency"],
        balance=row["balance"],
        reserved=row["reserved"],
        status=row["status"],
        version=row["version"],
    )


async def insert_account(connection: asyncpg.Connection, account_id: str, owner: str, currency: str) -> Account | None:
    """The new account, or None if the id is taken."""
    row = await connection.fetchrow(INSERT_ACCOUNT, account_id, owner, currency)
    return None if row is None else account_from_row(row)


async def select_account(connection: asyncpg.Connection, account_id: str) -> Account | None:
    row = await connection.fetchrow(SELECT_ACCOUNT, account_id)
    return None if row is None else account_from_row(row)


async def lock_accounts(connection: asyncpg.Connection, account_ids: list[str]) -> dict[str, Account]:
    rows = await connection.fetch(LOCK_ACCOUNTS, sorted(set(account_ids)))
    return {row["account_id"]: account_from_row(row) for row in rows}


async def update_account_status(connection: asyncpg.Connection, account_id: str, status: str) -> Account | None:
    row = await connection.fetchrow(SET_ACCOUNT_STATUS, account_id, status)
    return None if row is None else account_from_row(row)


async def sum_balances(connection: asyncpg.Connection) -> tuple[int, int, int]:
    """(sum of balance, sum of reserved, account count) on one shard."""
    balance, reserved, count = await connection.fetchrow(SUM_BALANCES)
    return balance, reserved, count
