"""An account's events in version order, wherever they are: a slot that moved between shards
leaves an account's history in two streams, which may be on two ledger servers."""

from __future__ import annotations

import heapq

from ledger import store
from ledger.chain import LedgerEvent
from ledger.partitions import LedgerPartitions, Partition


async def account_history(
    partitions: LedgerPartitions, account_id: str, after_version: int, limit: int
) -> list[LedgerEvent]:
    """Up to `limit` of the account's events after `after_version`, in version order: each
    server's first `limit`, merged."""

    async def one(partition: Partition) -> list[LedgerEvent]:
        async with partition.connection() as connection:
            return await store.account_events(connection, partition.streams, account_id, after_version, limit)

    pages = await partitions.each(one)
    return list(heapq.merge(*pages.values(), key=lambda event: event.version))[:limit]
