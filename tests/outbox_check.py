"""Shared check: the outbox explains every account exactly."""
from __future__ import annotations

import asyncpg

from shard_router.topology import Topology


async def assert_outbox_explains(topology: Topology, account_ids: list[str]) -> None:
    """For each account: events numbered 1..version with no gap or repeat, their amounts
    sum to the balance, their reserved deltas to reserved, the last one states both."""
    for account_id in account_ids:
        # An account that changed shard (a slot migration) left its earlier events in the
        # old shard's outbox: gather them from every shard.
        events: list[asyncpg.Record] = []
        account = None
        for shard, dsn in sorted(topology.shards.items()):
            connection = await asyncpg.connect(dsn)
            try:
                if shard == topology.shard_of(account_id):
                    account = await connection.fetchrow(
                        "SELECT balance, reserved, version, placement FROM accounts WHERE account_id = $1", account_id)
                events.extend(await connection.fetch(
                    "SELECT version, amount, reserved_delta, balance_after, reserved_after FROM outbox "
                    "WHERE account_id = $1", account_id))
            finally:
                await connection.close()
        assert account is not None and account["placement"] == "live", account_id
        events.sort(key=lambda event: event["version"])
        assert [e["version"] for e in events] == list(range(1, account["version"] + 1)), account_id
        assert sum(e["amount"] for e in events) == account["balance"], account_id
        assert sum(e["reserved_delta"] for e in events) == account["reserved"], account_id
        if events:
            assert (events[-1]["balance_after"], events[-1]["reserved_after"]) == (account["balance"], account["reserved"])
