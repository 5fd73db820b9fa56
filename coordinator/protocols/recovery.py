"""The recovery worker: finishes what a dead (or slow) coordinator left behind.

Two-phase batches: for each wallet prepared transaction on any shard it reads the
batch's decision on the decision shard named in the gid: 'commit' -> COMMIT PREPARED;
'abort' -> ROLLBACK PREPARED; none and older than `abort_after_ms` -> it first records
'abort' (fencing the coordinator, which can then no longer commit) and rolls back.
Two workers at once do no harm: decisions are inserted with ON CONFLICT DO NOTHING
and re-read, and finishing an already finished gid is a no-op.

TC/C and Saga transfers whose phase state is unfinished and untouched for
`abort_after_ms` are driven on from the step they reached, by the code the coordinator
runs (branch_flow.resume).

Traced (runtime/tracing.py), each action is a span: `recovery.abort` (an undecided batch
fenced), `recovery.finish` (a decided batch's branches, each `recovery.commit_prepared` or
`recovery.rollback_prepared`), `recovery.resume` (a shard's unfinished TC/C or Saga transfers).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from coordinator.protocols.branch_flow import BranchFlow
from core.domain.outcomes import Refused, Reroute
from core.runtime import tracing
from core.runtime.background import Periodic
from core.runtime.fan_out import fan_out
from shards.contract import Shards
from shards.errors import ShardError
from shards.phase_state import PhaseRow
from shards.two_phase import PreparedBranch

log = logging.getLogger("wallet.recovery")

ABORT_AFTER_MS_DEFAULT = 10_000  # liveness only: correctness never depends on it
# A decided batch's own coordinator commits its branches within milliseconds; recovery
# finishes them only once they are this old (or abort_after_ms, if smaller).
FINISH_AFTER_MS = 2_000
INTERVAL_S_DEFAULT = 2.0
BRANCHES_PER_PASS_MAX = 10_000
# Commit decisions are kept this long, then deleted once no prepared branch of their batch
# is left on any shard. It must exceed by far how long a coordinator can still be about
# to record a decision (its decision-shard transaction dies after the sessions'
# idle_in_transaction and statement timeouts: 90 s): an 'abort' written by recovery fences
# a slow coordinator only while it exists.
DECISION_RETENTION_S_DEFAULT = 24 * 3600
DECISION_RETENTION_S_MIN = 3600
DECISIONS_PRUNED_PER_PASS_MAX = 10_000
# Unfinished TC/C and Saga transfers one pass drives forward, per shard.
RESUME_PER_PASS_MAX = 1_000


@dataclass
class RecoveryReport:
    committed: int = 0
    rolled_back: int = 0
    waiting: int = 0  # undecided and young: their coordinator may still be working
    resumed: int = 0  # unfinished TC/C and Saga transfers driven forward
    decisions_pruned: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return self.waiting == 0 and not self.errors


async def recover_once(
    shards: Shards,
    names: list[str],
    abort_after_ms: int = ABORT_AFTER_MS_DEFAULT,
    decision_retention_s: int = DECISION_RETENTION_S_DEFAULT,
) -> RecoveryReport:
    assert abort_after_ms >= 0, "abort_after_ms must not be negative"
    assert decision_retention_s >= DECISION_RETENTION_S_MIN, f"keep decisions at least {DECISION_RETENTION_S_MIN} s"
    report = RecoveryReport()

    async def list_prepared(shard: str) -> list[PreparedBranch]:
        async with shards.session(shard) as session:
            return await session.select_prepared()

    listed = await fan_out(names, list_prepared)
    for shard, error in listed.errors.items():
        report.errors.append(f"{shard}: cannot list prepared transactions: {error}")
    branches = [branch for part in listed.results.values() for branch in part][:BRANCHES_PER_PASS_MAX]
    by_batch: dict[str, list[PreparedBranch]] = {}
    for branch in branches:
        by_batch.setdefault(branch.batch_id, []).append(branch)

    async def resolve(batch_id: str, members: list[PreparedBranch]) -> None:
        decision_shard = members[0].decision_shard
        try:
            async with shards.session(decision_shard) as session:
                outcome = (await session.select_decisions([batch_id])).get(batch_id)
                if outcome is not None and max(m.age_ms for m in members) < min(FINISH_AFTER_MS, abort_after_ms):
                    report.waiting += len(members)
                    return
                if outcome is None:
                    if max(m.age_ms for m in members) < abort_after_ms:
                        report.waiting += len(members)
                        return
                    with tracing.phase("recovery.abort", batch_id=batch_id, decision_shard=decision_shard):
                        outcome = await session.decide_unless_decided(batch_id, "abort")
        except ShardError as error:
            report.errors.append(f"batch {batch_id}: decision shard {decision_shard} unreachable: {error}")
            return
        action = "recovery.commit_prepared" if outcome == "commit" else "recovery.rollback_prepared"
        with tracing.phase("recovery.finish", batch_id=batch_id, decision=outcome, branches=len(members)):
            for member in members:
                try:
                    with tracing.phase(action, shard=member.branch_shard, gid=member.gid):
                        async with shards.session(member.branch_shard) as session:
                            if outcome == "commit":
                                if await session.commit_prepared(member.gid):
                                    report.committed += 1
                            elif await session.rollback_prepared(member.gid):
                                report.rolled_back += 1
                except ShardError as error:
                    report.errors.append(f"{member.gid}: {error}")

    await asyncio.gather(*(resolve(batch_id, members) for batch_id, members in by_batch.items()))
    if not listed.errors and len(branches) < BRANCHES_PER_PASS_MAX:
        # Every batch with a branch still prepared was listed above (a batch decided earlier
        # cannot prepare a new branch), so the other old decisions are no longer needed.
        report.decisions_pruned = await prune_decisions(shards, names, sorted(by_batch), decision_retention_s, report)
    if report.committed or report.rolled_back or report.errors or report.decisions_pruned:
        log.info("recovery: %s", report)
    return report


async def prune_decisions(
    shards: Shards, names: list[str], keep: list[str], retention_s: int, report: RecoveryReport
) -> int:
    async def one(shard: str) -> int:
        async with shards.session(shard) as session:
            return await session.prune_decisions(retention_s, keep, DECISIONS_PRUNED_PER_PASS_MAX)

    pruned = await fan_out(names, one)
    for shard, error in pruned.errors.items():
        report.errors.append(f"{shard}: cannot prune commit decisions: {error}")
    return sum(pruned.results.values())


async def resume_unfinished(
    shards: Shards, names: list[str], flows: list[BranchFlow], abort_after_ms: int, report: RecoveryReport
) -> None:
    """Drive every TC/C and Saga transfer left unfinished (untouched for `abort_after_ms`)."""

    async def one(shard: str) -> list[PhaseRow]:
        async with shards.session(shard) as session:
            return await session.select_unfinished(abort_after_ms, RESUME_PER_PASS_MAX)

    listed = await fan_out(names, one)
    for shard, error in listed.errors.items():
        report.errors.append(f"{shard}: cannot list unfinished transfers: {error}")
    for shard, phases in listed.results.items():
        resuming = tracing.phase("recovery.resume", shard=shard, unfinished=len(phases)) if phases else tracing.NULL
        with resuming:
            for flow in flows:
                for transaction_id, outcome in (await flow.resume(phases)).items():
                    if isinstance(outcome, (Refused, Reroute)):
                        report.errors.append(f"{transaction_id}: {outcome}")
                    else:
                        report.resumed += 1


class Recovery:
    """One pass over every shard: two-phase batches first, then TC/C and Saga transfers."""

    def __init__(self, shards: Shards, names: Callable[[], list[str]], flows: list[BranchFlow]) -> None:
        self.shards = shards
        self.names = names
        self.flows = flows

    async def run_once(self, abort_after_ms: int = ABORT_AFTER_MS_DEFAULT) -> RecoveryReport:
        names = self.names()
        report = await recover_once(self.shards, names, abort_after_ms)
        await resume_unfinished(self.shards, names, self.flows, abort_after_ms, report)
        return report


def recovery_worker(
    recover: Callable[[int], Awaitable[object]],
    interval_s: float = INTERVAL_S_DEFAULT,
    abort_after_ms: int = ABORT_AFTER_MS_DEFAULT,
    gate: Callable[[], bool] | None = None,
) -> Periodic:
    """One recovery pass every `interval_s` in the background."""

    async def one_pass() -> bool:
        await recover(abort_after_ms)
        return False

    return Periodic("recovery-worker", one_pass, interval_s, gate)
