"""Cross-shard transfers by XA-style two-phase commit, a batch at a time.

For one batch of transfers whose accounts span several shards:

  0. Read prior records of the batch's ids on every shard at once (no lock held: a
     record committed after this read collides on the transfers primary key when this
     batch writes its own, and the batch is retried and then sees it).
  1. Lock, shard by shard in name order (then account-id order inside each shard):
     BEGIN; lock the batch's accounts there. A total order over (shard, account) means
     batches in flight together cannot deadlock across servers, which PostgreSQL could
     not detect.
  2. Plan: the same pure planner as the one-shard path, over every locked row.
  3. Phase one: write each shard's part; PREPARE TRANSACTION on every writing shard
     but the decision shard (a debit-side shard of the batch).
  4. COMMIT POINT: the decision shard's transaction, holding its own part of the
     batch plus the row commit_decisions(batch_id, 'commit'), commits. That single
     COMMIT is the moment the batch becomes durable. Before it, any failure rolls
     everything back; after it, every branch is committed, retried, and finally left
     to the recovery worker.
  5. Phase two: COMMIT PREPARED on every other branch.

Recovery (protocols/recovery.py) fences a dead coordinator by inserting 'abort' under the
same batch_id: the primary key lets exactly one of the two decisions exist.
"""
from __future__ import annotations

import asyncio
import logging
from contextlib import AsyncExitStack
from datetime import datetime
from typing import Callable
from uuid import uuid4

import asyncpg
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_random_exponential

from coordinator.domain.batch_plan import plan_local_batch
from coordinator.domain.outcomes import Outcome, Reroute, unavailable
from coordinator.domain.postings import AccountChange, BalanceEvent
from coordinator.domain.transfers import RecordColumns, Transfer
from coordinator.protocols.one_shard import outcomes_of
from coordinator.protocols.prior_records import PriorRecords
from coordinator.protocols.retries import retry_conflicts
from coordinator.runtime import fault_points
from coordinator.runtime.fan_out import fan_out
from coordinator.runtime.logs import log_phase
from shard_router.topology import Topology
from shards import accounts as account_sql
from shards import transfers as transfer_sql
from shards import two_phase as two_phase_sql
from shards.errors import AccountsMoved, ShardError, ShardRetryable, ShardUnavailable
from shards.pool import Connection, ShardPools, errors_of

log = logging.getLogger("wallet.two_phase")

COMMIT_ATTEMPTS_MAX = 4


class TwoPhaseCommit:
    def __init__(self, pools: ShardPools, topology: Callable[[], Topology], records: PriorRecords) -> None:
        self.pools = pools
        self.topology = topology
        self.records = records

    async def apply_batch(self, transfers: list[Transfer]) -> list[Outcome]:
        """One outcome per transfer: its result (new or replayed), a refusal, or a reroute."""
        try:
            return await retry_conflicts(lambda: self._attempt(transfers), wait_max_s=0.5)
        except AccountsMoved as moved:
            return [Reroute(tuple(moved.account_ids))] * len(transfers)
        except ShardError as error:
            return [unavailable(error.shard)] * len(transfers)

    async def _attempt(self, transfers: list[Transfer]) -> list[Outcome]:
        topology = self.topology()
        batch_id = str(uuid4())
        accounts_on: dict[str, set[str]] = {}
        for transfer in transfers:
            for account_id in (transfer.from_account, transfer.to_account):
                if account_id is not None:
                    accounts_on.setdefault(topology.shard_of(account_id), set()).add(account_id)
        involved = sorted(accounts_on)
        transaction_ids = [t.transaction_id for t in transfers]
        stored = await self.records.find(transaction_ids)  # every shard, at once

        gids: dict[str, str] = {}
        async with AsyncExitStack() as stack:
            connections: dict[str, Connection] = {}
            decided = False
            try:
                # 1. Lock in global order.
                locked = {}
                for shard in involved:
                    connection = await stack.enter_async_context(self.pools.connection(shard))
                    connections[shard] = connection
                    with errors_of(shard):
                        await two_phase_sql.begin(connection)
                        locked.update(await account_sql.lock_accounts(connection, sorted(accounts_on[shard])))

                # 2. Plan over every locked row.
                plan = plan_local_batch(transfers, locked, stored, protocol="2pc")
                postings = plan.postings
                on_shard = {shard: set(accounts_on[shard]) for shard in involved}
                changes = {shard: postings.changes_on(on_shard[shard]) for shard in involved}
                events = {shard: postings.events_on(on_shard[shard]) for shard in involved}
                recorded_on: dict[str, list[int]] = {shard: [] for shard in involved}  # new records' indexes
                for index in plan.new:
                    transfer = transfers[index]
                    recorded_on[topology.shard_of(transfer.from_account or transfer.to_account)].append(index)
                records = {shard: plan.records(transfers, recorded_on[shard]) for shard in involved}
                writers = [shard for shard in involved if changes[shard] or recorded_on[shard]]
                for shard in involved:
                    if shard not in writers:  # read-only participant: release its locks now
                        with errors_of(shard):
                            await two_phase_sql.rollback(connections[shard])
                if not writers:
                    return outcomes_of(transfers, plan)

                # 3. Phase one. Every write finishes before any failure is acted on: a
                # connection is never rolled back while its statement still runs.
                written = await fan_out(writers, lambda shard: self._write(
                    shard, connections[shard], changes[shard], records[shard], events[shard]))
                written.raise_first()
                stamps = written.results

                def created_at(transfer: Transfer) -> datetime | None:
                    return stamps.get(topology.shard_of(transfer.from_account or transfer.to_account))

                if len(writers) == 1:  # every change on one shard after all: a local commit
                    with errors_of(writers[0]):
                        await two_phase_sql.commit(connections[writers[0]])
                    decided = True
                    return outcomes_of(transfers, plan, stamp_of=created_at)
                decision_shard = min(shard for shard in writers if recorded_on[shard])
                gids = {
                    shard: two_phase_sql.make_gid(batch_id, decision_shard, shard)
                    for shard in writers if shard != decision_shard
                }
                await self._prepare_all(connections, gids, batch_id, decision_shard)
                log_phase(log, "2pc.prepared", transaction_ids, batch_id=batch_id, shards=writers)
                fault_points.reach("2pc.after_all_prepares")

                # 4. The commit point.
                decided = await self._decide(batch_id, decision_shard, connections[decision_shard])
                if not decided:
                    await self._roll_back_prepared(gids)
                    raise ShardRetryable(decision_shard, f"batch {batch_id} was aborted by recovery; retrying")
                log_phase(log, "2pc.decided_commit", transaction_ids, batch_id=batch_id, decision_shard=decision_shard)
                fault_points.reach("2pc.after_decision")
            except BaseException:
                if not decided:
                    for shard, connection in connections.items():
                        try:
                            with errors_of(shard):
                                await two_phase_sql.rollback(connection)
                        except (ShardError, asyncpg.PostgresError, asyncpg.InterfaceError):
                            pass  # a dead connection's transaction dies with it
                raise

        # 5. Phase two, outside the locks' connections.
        await self._commit_prepared(gids)
        log_phase(log, "2pc.committed", transaction_ids, batch_id=batch_id)
        return outcomes_of(transfers, plan, stamp_of=created_at)

    async def _write(self, shard: str, connection: Connection, changes: dict[str, AccountChange],
                     records: RecordColumns, events: list[BalanceEvent]) -> datetime:
        with errors_of(shard):
            return await transfer_sql.write_batch(connection, changes, records, events)

    async def _prepare_all(self, connections: dict[str, Connection], gids: dict[str, str], batch_id: str,
                           decision_shard: str) -> None:
        prepared = 0

        async def prepare(shard: str) -> None:
            nonlocal prepared
            with errors_of(shard):
                await two_phase_sql.prepare(connections[shard], gids[shard])
            prepared += 1
            if prepared == 1:
                fault_points.reach("2pc.after_first_prepare")

        prepared_all = await fan_out(gids, prepare)
        if prepared_all.errors:
            # No decision exists: roll back what did prepare (recovery does it if we cannot).
            await self._roll_back_prepared({shard: gids[shard] for shard in prepared_all.results})
            # A PREPARE that failed with its connection may have landed (and, on a replicated
            # shard, be on the promoted standby): fence the batch with 'abort' now, so recovery
            # rolls such a branch back as soon as it finds it instead of after abort_after_ms
            # (its locks would hold every later transfer of those accounts till then).
            await self._fence_abort(batch_id, decision_shard)
            prepared_all.raise_first()

    async def _fence_abort(self, batch_id: str, decision_shard: str) -> None:
        try:
            async with self.pools.connection(decision_shard) as fresh:
                await two_phase_sql.decide_unless_decided(fresh, batch_id, "abort")
        except ShardError as error:  # recovery fences it later, by age
            log.warning("batch %s: abort decision not recorded on %s (%s); left to recovery", batch_id,
                        decision_shard, error)

    async def _decide(self, batch_id: str, decision_shard: str, connection: Connection) -> bool:
        """True once the commit decision is durable; False if recovery aborted the batch first."""
        try:
            with errors_of(decision_shard):
                await two_phase_sql.insert_decision(connection, batch_id, "commit")
                await two_phase_sql.commit(connection)  # <- THE COMMIT POINT
            return True
        except ShardRetryable:  # unique violation: recovery's 'abort' stands
            with errors_of(decision_shard):
                await two_phase_sql.rollback(connection)
            return False
        except ShardUnavailable:
            # The COMMIT may or may not have landed. Ask again on a fresh connection; if the
            # decision is missing, fence it with 'abort' so the answer cannot change later.
            async with self.pools.connection(decision_shard) as fresh:
                outcome = await two_phase_sql.decide_unless_decided(fresh, batch_id, "abort")
            return outcome == "commit"

    async def _commit_prepared(self, gids: dict[str, str]) -> None:
        committed = 0

        async def finish(shard: str, gid: str) -> None:
            nonlocal committed
            try:
                async for attempt in AsyncRetrying(
                    stop=stop_after_attempt(COMMIT_ATTEMPTS_MAX),
                    wait=wait_random_exponential(multiplier=0.01, max=0.2),
                    retry=retry_if_exception_type(ShardError),
                    reraise=True,
                ):
                    with attempt:
                        async with self.pools.connection(shard) as connection:
                            await two_phase_sql.commit_prepared(connection, gid)
            except Exception as error:  # noqa: BLE001: after the decision nothing may fail the batch
                # Decided: the recovery worker will commit it. The transfer has succeeded.
                log.warning("COMMIT PREPARED %s failed (%r); left to recovery", gid, error)
                return
            committed += 1
            if committed == 1:
                fault_points.reach("2pc.after_first_commit")

        await asyncio.gather(*(finish(shard, gid) for shard, gid in gids.items()))

    async def _roll_back_prepared(self, gids: dict[str, str]) -> None:
        async def undo(shard: str, gid: str) -> None:
            try:
                async with self.pools.connection(shard) as connection:
                    await two_phase_sql.rollback_prepared(connection, gid)
            except ShardError as error:
                log.warning("ROLLBACK PREPARED %s failed (%s); left to recovery", gid, error)

        await asyncio.gather(*(undo(shard, gid) for shard, gid in gids.items()))

