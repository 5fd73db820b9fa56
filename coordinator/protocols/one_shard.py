"""The one-shard path: both accounts (or a deposit's one account) on one shard,
so a batch of transfers is a single local transaction.

Round trips per batch, whatever its size: BEGIN (while the round's read of prior records
runs on every shard: record_lookup.SharedRead), lock accounts, write (one statement for
every balance, record and outbox row), COMMIT. Reading records without the locks is safe: a
record committed after the read collides on the transfers primary key when the batch
writes its own (a retryable conflict), and the retry reads them again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime

from coordinator.protocols.prior_records import PriorRecords
from coordinator.protocols.retries import retry_conflicts
from core.domain.batch_plan import BatchPlan, plan_local_batch
from core.domain.outcomes import Outcome, Reroute, conflict, unavailable
from core.domain.transfers import Transfer
from core.runtime import tracing
from core.runtime.fan_out import settled
from core.runtime.logs import log_phase
from shards.contract import Shards
from shards.errors import AccountsMoved, ShardError

log = logging.getLogger("wallet.local")


class OneShard:
    """Applies batches of transfers whose accounts all live on one shard."""

    def __init__(self, shards: Shards) -> None:
        self.shards = shards

    async def apply_batch(self, shard: str, transfers: list[Transfer], records: PriorRecords) -> list[Outcome]:
        """One outcome per transfer: its result (new or replayed), a refusal, or a reroute."""
        attempts = 0

        async def attempt() -> tuple[BatchPlan, datetime | None]:
            nonlocal attempts
            attempts += 1
            ids = [t.transaction_id for t in transfers]
            reading = asyncio.ensure_future(records.find(ids, fresh=attempts > 1))  # beside BEGIN and the lock
            try:
                with tracing.phase("local.transaction", shard=shard, transfers=len(transfers), attempt=attempts):
                    async with self.shards.atomic(shard) as session:
                        account_ids = [t.to_account for t in transfers] + [
                            t.from_account for t in transfers if t.from_account
                        ]
                        accounts = await session.lock_accounts(account_ids)
                        plan = plan_local_batch(transfers, accounts, await reading)
                        created_at = None
                        if plan.new:
                            with tracing.phase("local.write", shard=shard, transfers=len(plan.new)):
                                created_at = await session.write_batch(
                                    plan.postings.changes, plan.records(transfers), plan.postings.events
                                )
            finally:
                await settled(reading)
            return plan, created_at

        try:
            plan, created_at = await retry_conflicts(attempt)
        except AccountsMoved as moved:
            return [Reroute(tuple(moved.account_ids))] * len(transfers)
        except ShardError as error:
            return [unavailable(error.shard)] * len(transfers)
        log_phase(log, "local.committed", [t.transaction_id for t in transfers], shard=shard)
        return outcomes_of(transfers, plan, created_at)


def outcomes_of(
    transfers: list[Transfer],
    plan: BatchPlan,
    stamp: datetime | None = None,
    stamp_of: Callable[[Transfer], datetime | None] | None = None,
) -> list[Outcome]:
    """One outcome per planned transfer: its result (new or replayed) or a conflict. New
    records carry the time the shard stored them (BatchPlan.results)."""
    return [
        conflict(transfer.transaction_id) if result is None else result
        for transfer, result in zip(transfers, plan.results(transfers, stamp, stamp_of), strict=True)
    ]
