"""Shared check: the outbox explains every account exactly."""
from __future__ import annotations

import asyncpg

from shard_router.topology import Topology


async def assert_outbox_explains(topology: Topology, account_ids: list[str]) -> None:
    """For each account: events numbered 1..version with no gap or repeat, their amounts
    sum to the balance, their reserved deltas to reserved, the last one states both."""
    for account_id in account_ids:
        connection = await asyncpg.connect(topology.shards[topology.shard_of(account_id)])
        try:
            account = await connection.fetchrow(
                "SELECT balance, reserved, version FROM accounts WHERE account_id = $1", account_id)
            events = await connection.fetch(
                "SELECT version, amount, reserved_delta, balance_after, reserved_after FROM outbox "
                "WHERE account_id = $1 ORDER BY version", account_id)
        finally:
            await connection.close()
        assert [e["version"] for e in events] == list(range(1, account["version"] + 1)), account_id
        assert sum(e["amount"] for e in events) == account["balance"], account_id
        assert sum(e["reserved_delta"] for e in events) == account["reserved"], account_id
        if events:
            assert (events[-1]["balance_after"], events[-1]["reserved_after"]) == (account["balance"], account["reserved"])
