"""Bulk account setup for benchmarks: COPY straight into each shard, with the matching
outbox deposit events, so the ledger and audit stay consistent."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg

from shard_router.topology import Topology


def account_ids(count: int, prefix: str = "bench") -> list[str]:
    return [f"{prefix}-{index:07d}" for index in range(count)]


async def create_accounts(topology: Topology, ids: list[str], balance: int, currency: str = "USD") -> None:
    by_shard: dict[str, list[str]] = {}
    for account_id in ids:
        by_shard.setdefault(topology.shard_of(account_id), []).append(account_id)

    async def load(shard: str, group: list[str]) -> None:
        connection = await asyncpg.connect(topology.shards[shard])
        try:
            async with connection.transaction():
                await connection.copy_records_to_table(
                    "accounts",
                    columns=["account_id", "owner", "currency", "balance", "reserved", "status", "version"],
                    records=[(a, "bench", currency, balance, 0, "active", 1) for a in group],
                )
                await connection.copy_records_to_table(
                    "outbox",
                    columns=[
                        "transaction_id",
                        "account_id",
                        "version",
                        "kind",
                        "amount",
                        "reserved_delta",
                        "balance_after",
                        "reserved_after",
                        "currency",
                    ],
                    records=[(uuid.uuid4(), a, 1, "deposit", balance, 0, balance, 0, currency) for a in group],
                )
        finally:
            await connection.close()

    await asyncio.gather(*(load(shard, group) for shard, group in by_shard.items()))
