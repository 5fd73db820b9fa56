"""The one-shard path: both accounts (or a deposit's one account) on one shard,
so a batch of transfers is a single local transaction.

Round trips per batch: BEGIN, lock accounts, read prior records, write (one
statement for every balance and record), COMMIT, whatever the batch size.
"""
from __future__ import annotations

import logging
from dataclasses import replace
from datetime import datetime
from typing import Callable
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


async def apply_local_batch(
    pools: ShardPools,
    shard: str,
    transfers: list[Transfer],
    stored_elsewhere: dict[UUID, StoredTransfer] | None = None,
) -> list[TransferResult | str]:
    """One outcome per transfer: its result (new or replayed) or CONFLICT."""
    elsewhere = stored_elsewhere or {}

    async def attempt() -> tuple[BatchPlan, datetime | None]:
        async with pools.transaction(shard) as connection:
            account_ids = [t.to_account for t in transfers] + [t.from_account for t in transfers if t.from_account]
            # Lock first, then read records: a racing batch for the same accounts has
            # committed its records by the time we hold the locks.
            accounts = await account_sql.lock_accounts(connection, account_ids)
            stored = await transfer_sql.select_transfers(connection, [t.transaction_id for t in transfers])
            plan = plan_local_batch(transfers, accounts, {**elsewhere, **stored})
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
            outcomes.append(replace(result, created_at=stamp(result.transfer)) if result.created_at is None else result)
    return outcomes
