"""The one-shard path: both accounts (or a deposit's one account) on one shard,
so a batch of transfers is a single local transaction.

Round trips per batch, whatever its size: read prior records of its ids (every shard
at once, before the transaction), BEGIN, lock accounts, write (one statement for every
balance, record and outbox row), COMMIT. Reading records without the locks is safe: a
record committed after the read collides on the transfers primary key when the batch
writes its own (a retryable conflict), and the retry sees it.
"""
from __future__ import annotations

import logging
from datetime import datetime
from typing import Awaitable, Callable
from uuid import UUID

from coordinator.batch_plan import BatchPlan, StoredTransfer, plan_local_batch
from coordinator.domain import Transfer, TransferResult
from coordinator.logs import log_phase
from coordinator.retries import retry_conflicts
from shards import accounts as account_sql
from shards import transfers as transfer_sql
from shards.pool import ShardPools

log = logging.getLogger("wallet.local")
CONFLICT = "conflict"  # outcome for a reused transaction id with a different body
FindRecords = Callable[[list[UUID]], Awaitable[dict[UUID, StoredTransfer]]]


async def apply_local_batch(
    pools: ShardPools,
    shard: str,
    transfers: list[Transfer],
    find_records: FindRecords,
) -> list[TransferResult | str]:
    """One outcome per transfer: its result (new or replayed) or CONFLICT. `find_records`
    reads prior records of the ids on every shard."""

    async def attempt() -> tuple[BatchPlan, datetime | None]:
        stored = await find_records([t.transaction_id for t in transfers])  # again on each retry
        async with pools.transaction(shard) as connection:
            account_ids = [t.to_account for t in transfers] + [t.from_account for t in transfers if t.from_account]
            accounts = await account_sql.lock_accounts(connection, account_ids)
            plan = plan_local_batch(transfers, accounts, stored)
            created_at = None
            if plan.new_results:
                created_at = await transfer_sql.write_batch(
                    connection, plan.postings.changes, plan.new_results, plan.postings.events
                )
        return plan, created_at

    plan, created_at = await retry_conflicts(attempt)
    log_phase(log, "local.committed", [t.transaction_id for t in transfers], shard=shard)
    return outcomes_of(plan, lambda transfer: created_at)


def outcomes_of(plan: BatchPlan, stamp: Callable[[Transfer], datetime | None]) -> list[TransferResult | str]:
    """One outcome per planned transfer: its result (new or replayed) or CONFLICT."""
    outcomes: list[TransferResult | str] = []
    for result, disposition in zip(plan.results, plan.dispositions):
        if disposition == "conflict":
            outcomes.append(CONFLICT)
        else:
            assert result is not None
            # New records (and in-batch replays of them) carry the stamp the shard stored.
            outcomes.append(result if result.created_at is not None else result.stamped(stamp(result.transfer)))
    return outcomes
