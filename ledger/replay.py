"""Balances rebuilt from the ledger at any moment, starting from the latest snapshot before it."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

from ledger import store
from shards.pool import Connection

# "Now and everything relayed": later than any event can be.
END_OF_TIME = datetime(9999, 1, 1, tzinfo=timezone.utc)


@dataclass(frozen=True)
class ReplayedBalance:
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


async def replay_balances(connection: Connection, at: datetime, account_id: str | None = None,
                          use_snapshot: bool = True) -> Replay:
    assert at.tzinfo is not None, "replay moments carry a timezone"
    snapshot = await store.latest_snapshot(connection, at) if use_snapshot else None
    snapshot_id = snapshot[0] if snapshot else None
    rows = await store.replay(connection, at, snapshot_id, account_id)
    balances = {
        row["account_id"]: ReplayedBalance(row["account_id"], row["currency"], row["balance"], row["reserved"], row["version"])
        for row in rows
    }
    for balance in balances.values():
        assert 0 <= balance.reserved <= balance.balance, f"replay gives {balance.account_id} an impossible balance"
    return Replay(at, snapshot_id, balances)


async def take_snapshot(connection: Connection, at: datetime) -> int:
    """Store every account's balance at `at` (from the previous snapshot onward)."""
    async with connection.transaction():
        snapshot = await store.latest_snapshot(connection, at)
        rows = await store.replay(connection, at, snapshot[0] if snapshot else None, None)
        return await store.insert_snapshot(connection, at, rows)
