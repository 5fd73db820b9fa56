"""Cross-shard transfers by XA-style two-phase commit, a batch at a time.

For one batch of transfers whose accounts span several shards (each step one round trip,
to every shard at once unless it says otherwise). A round (coordinator/service/rounds.py)
also hands it the one-shard transfers of the shards it writes: they ride in its branches,
recorded as `local`.

  1. BEGIN on every shard the batch touches. Beside it, the round's read of prior records
     of the batch's ids on every shard (record_lookup.SharedRead; no lock held: a record
     committed after this read collides on the transfers primary key when this batch writes
     its own, and the batch is retried and reads again).
  2. Lock every shard's accounts at once (account-id order inside each shard). Only one
     batch of a process takes locks at a time (the next starts at this one's commit point:
     runtime/gates.py), so no two of them wait on each other. One of another coordinator can:
     a wait across servers that no server sees as a cycle. So this first attempt waits
     at most PARALLEL_LOCK_TIMEOUT_MS for a lock; past it the batch rolls back and is retried
     locking shard by shard in name order, one round trip each: a total order over (shard,
     account) cannot deadlock.
  3. Plan: the same pure planner as the one-shard path, over every locked row.
  4. Write each shard's part. The decision shard (a debit-side shard of the batch) writes,
     with its part, the row commit_decisions(batch_id, 'commit'), not yet committed.
  5. Phase one: PREPARE TRANSACTION on every other writing shard.
  6. COMMIT POINT: the decision shard's COMMIT. That single COMMIT is the moment the batch
     becomes durable. Before it, any failure rolls everything back; after it, every branch
     is committed, retried, and finally left to the recovery worker.
  7. Phase two: COMMIT PREPARED on every other branch, on the connections that prepared them.

A batch costs 6 round trips (steps 1, 2, 4, 5, 6, 7) whatever the shards it spans (a retry:
one more per shard past the first).

Recovery (protocols/recovery.py) fences a dead coordinator by inserting 'abort' under the
same batch_id: the primary key lets exactly one of the two decisions exist. A fence that
meets the coordinator's 'commit' row written but not yet committed waits for that
transaction, then finds the batch committed, or inserts 'abort' once the row is gone.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import datetime

import asyncpg
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_random_exponential

from coordinator.protocols.one_shard import outcomes_of
from coordinator.protocols.prior_records import PriorRecords
from coordinator.protocols.retries import retry_conflicts
from core.domain.accounts import Account
from core.domain.batch_plan import BatchPlan, plan_local_batch
from core.domain.outcomes import Outcome, Reroute, unavailable
from core.domain.transfers import ProtocolName, Transfer
from core.runtime import fault_points, tracing
from core.runtime.fan_out import fan_out, settled
from core.runtime.gates import let_next_start
from core.runtime.ids import new_batch_id
from core.runtime.logs import log_phase
from shard_router.topology import Topology
from shards.contract import Shards, ShardSession
from shards.errors import AccountsMoved, ShardError, ShardRetryable, ShardUnavailable
from shards.two_phase import make_gid

log = logging.getLogger("wallet.two_phase")

COMMIT_ATTEMPTS_MAX = 4
# How long a first attempt, locking every shard at once, waits for a lock before it yields
# to the ordered retry. Longer than a batch holds its locks under load (a few ms), far
# shorter than the sessions' lock_timeout (5 s: shards/pool.py).
PARALLEL_LOCK_TIMEOUT_MS = 200


@dataclass
class Batch:
    """One attempt at a batch: its shards' connections and how far it got."""

    batch_id: str
    transaction_ids: list[str]
    topology: Topology
    accounts_on: dict[str, set[str]]  # shard -> the batch's accounts there
    sessions: dict[str, ShardSession] = field(default_factory=dict)
    locked: dict[str, Account] = field(default_factory=dict)
    stamps: dict[str, datetime] = field(default_factory=dict)  # writing shard -> its records' created_at
    gids: dict[str, str] = field(default_factory=dict)  # prepared shard -> its gid
    decision_shard: str | None = None
    decided: bool = False  # the commit point has passed: nothing may roll back now

    def debit_shard(self, transfer: Transfer) -> str:
        return self.topology.shard_of(transfer.from_account or transfer.to_account)

    def protocols(self, transfers: list[Transfer]) -> list[ProtocolName] | None:
        """Per transfer, `local` for those within one shard (a round hands them to this batch
        on the shards it writes: rounds.py), else `2pc`; None when there are none."""
        shard_of = self.topology.shard_of
        found: list[ProtocolName] = [
            "2pc" if t.from_account is not None and shard_of(t.from_account) != shard_of(t.to_account) else "local"
            for t in transfers
        ]
        return found if "local" in found else None

    def created_at(self, transfer: Transfer) -> datetime | None:
        return self.stamps.get(self.debit_shard(transfer))


def accounts_by_shard(transfers: list[Transfer], topology: Topology) -> dict[str, set[str]]:
    accounts_on: dict[str, set[str]] = {}
    for transfer in transfers:
        for account_id in (transfer.from_account, transfer.to_account):
            if account_id is not None:
                accounts_on.setdefault(topology.shard_of(account_id), set()).add(account_id)
    return accounts_on


class TwoPhaseCommit:
    def __init__(self, shards: Shards, topology: Callable[[], Topology]) -> None:
        self.shards = shards
        self.topology = topology

    async def apply_batch(self, transfers: list[Transfer], records: PriorRecords) -> list[Outcome]:
        """One outcome per transfer: its result (new or replayed), a refusal, or a reroute."""
        attempts = 0

        async def attempt() -> list[Outcome]:
            nonlocal attempts
            attempts += 1
            return await self._attempt(transfers, records, retry=attempts > 1)

        try:
            return await retry_conflicts(attempt, wait_max_s=0.5)
        except AccountsMoved as moved:
            return [Reroute(tuple(moved.account_ids))] * len(transfers)
        except ShardError as error:
            return [unavailable(error.shard)] * len(transfers)

    async def _attempt(self, transfers: list[Transfer], records: PriorRecords, retry: bool) -> list[Outcome]:
        topology = self.topology()
        batch = Batch(
            new_batch_id(), [t.transaction_id for t in transfers], topology, accounts_by_shard(transfers, topology)
        )
        reading = asyncio.ensure_future(records.find(batch.transaction_ids, fresh=retry))
        try:
            async with AsyncExitStack() as stack:
                for shard in sorted(batch.accounts_on):
                    batch.sessions[shard] = await stack.enter_async_context(self.shards.session(shard))
                try:
                    with tracing.phase("2pc.lock", batch_id=batch.batch_id, shards=len(batch.sessions), in_order=retry):
                        await self._lock(batch, in_order=retry)
                    plan = plan_local_batch(
                        transfers, batch.locked, await reading, protocol="2pc", protocols=batch.protocols(transfers)
                    )
                    await self._write_and_prepare(batch, transfers, plan)
                    if batch.gids:
                        await self._decide(batch)
                except BaseException:
                    if not batch.decided:
                        await self._roll_back_open(batch)
                    raise
                if batch.gids:
                    await self._commit_prepared(batch)
                    log_phase(log, "2pc.committed", batch.transaction_ids, batch_id=batch.batch_id)
        finally:
            await settled(reading)
        return outcomes_of(transfers, plan, stamp_of=batch.created_at)

    async def _lock(self, batch: Batch, in_order: bool) -> None:
        """BEGIN everywhere at once, then the locks: every shard at once, or in the global order."""

        async def begin(shard: str) -> None:
            await batch.sessions[shard].begin(lock_timeout_ms=None if in_order else PARALLEL_LOCK_TIMEOUT_MS)

        async def lock(shard: str) -> None:
            batch.locked.update(await batch.sessions[shard].lock_accounts(sorted(batch.accounts_on[shard])))

        (await fan_out(batch.sessions, begin)).raise_first()
        if in_order:
            for shard in sorted(batch.accounts_on):
                await lock(shard)
        else:
            (await fan_out(batch.accounts_on, lock)).raise_first()

    async def _write_and_prepare(self, batch: Batch, transfers: list[Transfer], plan: BatchPlan) -> None:
        """Each shard's part written (the decision with the decision shard's part), then PREPARE
        on the others. A batch whose changes all fall on one shard commits there, locally."""
        postings, involved = plan.postings, sorted(batch.accounts_on)
        recorded_on: dict[str, list[int]] = {shard: [] for shard in involved}  # new records' indexes
        for index in plan.new:
            recorded_on[batch.debit_shard(transfers[index])].append(index)
        changes = {shard: postings.changes_on(batch.accounts_on[shard]) for shard in involved}
        writers = [shard for shard in involved if changes[shard] or recorded_on[shard]]
        if len(writers) > 1:
            batch.decision_shard = min(shard for shard in writers if recorded_on[shard])
            batch.gids = {
                shard: make_gid(batch.batch_id, batch.decision_shard, shard)
                for shard in writers
                if shard != batch.decision_shard
            }

        async def write_or_release(shard: str) -> None:
            session = batch.sessions[shard]
            if shard not in writers:  # read-only participant: release its locks now
                await session.rollback()
                return
            with tracing.phase("2pc.write", shard=shard, decision=shard == batch.decision_shard):
                batch.stamps[shard] = await session.write_batch(
                    changes[shard],
                    plan.records(transfers, recorded_on[shard]),
                    postings.events_on(batch.accounts_on[shard]),
                    commit_decision=batch.batch_id if shard == batch.decision_shard else None,
                )

        # Every write finishes before any failure is acted on: a connection is never rolled
        # back while its statement still runs.
        (await fan_out(involved, write_or_release)).raise_first()
        if len(writers) == 1:  # every change on one shard after all: a local commit
            with tracing.phase("2pc.commit_local", shard=writers[0]):
                await batch.sessions[writers[0]].commit()
            batch.decided = True
        elif writers:
            fault_points.reach("2pc.after_writes")
            await self._prepare_all(batch)
            log_phase(log, "2pc.prepared", batch.transaction_ids, batch_id=batch.batch_id, shards=writers)
            fault_points.reach("2pc.after_all_prepares")

    async def _prepare_all(self, batch: Batch) -> None:
        prepared = 0

        async def prepare(shard: str) -> None:
            nonlocal prepared
            with tracing.phase("2pc.prepare", shard=shard, gid=batch.gids[shard]):
                await batch.sessions[shard].prepare(batch.gids[shard])
            prepared += 1
            if prepared == 1:
                fault_points.reach("2pc.after_first_prepare")

        prepared_all = await fan_out(batch.gids, prepare)
        if prepared_all.errors:
            assert batch.decision_shard is not None
            # No decision exists: the decision shard's uncommitted 'commit' row goes first (the
            # fence below would wait for it), then what did prepare (recovery does it if we
            # cannot). A PREPARE that failed with its connection may have landed (and, on a
            # replicated shard, be on the promoted standby): fence the batch with 'abort' now,
            # so recovery rolls such a branch back as soon as it finds it instead of after
            # abort_after_ms (its locks would hold every later transfer of those accounts).
            await self._roll_back(batch.sessions[batch.decision_shard])
            await self._roll_back_prepared({shard: batch.gids[shard] for shard in prepared_all.results})
            await self._fence_abort(batch.batch_id, batch.decision_shard)
            prepared_all.raise_first()

    async def _decide(self, batch: Batch) -> None:
        """The commit point. If the COMMIT's answer is lost, ask again on a fresh connection; a
        decision still missing is fenced with 'abort', so the answer cannot change later."""
        shard = batch.decision_shard
        assert shard is not None
        try:
            with tracing.phase("2pc.decide", shard=shard, batch_id=batch.batch_id):
                await batch.sessions[shard].commit()  # <- THE COMMIT POINT
        except ShardUnavailable:
            async with self.shards.session(shard) as fresh:
                outcome = await fresh.decide_unless_decided(batch.batch_id, "abort")
            if outcome != "commit":
                await self._roll_back_prepared(batch.gids)
                raise ShardRetryable(shard, f"batch {batch.batch_id}: its commit did not land; retrying") from None
        batch.decided = True
        let_next_start()
        log_phase(log, "2pc.decided_commit", batch.transaction_ids, batch_id=batch.batch_id, decision_shard=shard)
        fault_points.reach("2pc.after_decision")

    async def _fence_abort(self, batch_id: str, decision_shard: str) -> None:
        try:
            async with self.shards.session(decision_shard) as fresh:
                await fresh.decide_unless_decided(batch_id, "abort")
        except ShardError as error:  # recovery fences it later, by age
            log.warning(
                "batch %s: abort decision not recorded on %s (%s); left to recovery", batch_id, decision_shard, error
            )

    async def _commit_prepared(self, batch: Batch) -> None:
        """COMMIT PREPARED on the connection that prepared each branch; where that fails, on
        fresh connections, retried (bounded), then left to recovery: the batch has succeeded."""
        committed = 0

        async def finish(shard: str, gid: str) -> None:
            nonlocal committed
            try:
                with tracing.phase("2pc.commit_prepared", shard=shard, gid=gid):
                    await batch.sessions[shard].commit_prepared(gid)
            except (ShardError, asyncpg.PostgresError) as error:
                batch.sessions[shard].forget_if_broken(error)
                if not await self._commit_prepared_again(shard, gid):
                    return
            committed += 1
            if committed == 1:
                fault_points.reach("2pc.after_first_commit")

        await asyncio.gather(*(finish(shard, gid) for shard, gid in batch.gids.items()))

    async def _commit_prepared_again(self, shard: str, gid: str) -> bool:
        try:
            async for attempt in AsyncRetrying(
                stop=stop_after_attempt(COMMIT_ATTEMPTS_MAX),
                wait=wait_random_exponential(multiplier=0.01, max=0.2),
                retry=retry_if_exception_type(ShardError),
                reraise=True,
            ):
                with attempt:
                    async with self.shards.session(shard) as session:
                        await session.commit_prepared(gid)
        except Exception as error:  # after the decision nothing may fail the batch
            log.warning("COMMIT PREPARED %s failed (%r); left to recovery", gid, error)
            return False
        return True

    async def _roll_back_open(self, batch: Batch) -> None:
        await asyncio.gather(*(self._roll_back(session) for session in batch.sessions.values()))

    @staticmethod
    async def _roll_back(session: ShardSession) -> None:
        try:
            await session.rollback()
        except (ShardError, asyncpg.PostgresError, asyncpg.InterfaceError):
            pass  # a dead connection's transaction dies with it

    async def _roll_back_prepared(self, gids: dict[str, str]) -> None:
        async def undo(shard: str, gid: str) -> None:
            try:
                async with self.shards.session(shard) as session:
                    await session.rollback_prepared(gid)
            except ShardError as error:
                log.warning("ROLLBACK PREPARED %s failed (%s); left to recovery", gid, error)

        await asyncio.gather(*(undo(shard, gid) for shard, gid in gids.items()))
