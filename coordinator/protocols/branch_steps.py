"""The local transactions TC/C and Saga run on one shard, each over a batch: Try on the debit
shard, a branch operation on the credit shard, the decision with Confirm or Cancel of the
debit branch, done. branch_flow.py, tcc.py and saga.py put them in order; no lock is held
between them. What each operation does to the rows is decided by domain/branch_plan.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Literal

from coordinator.protocols.retries import retry_conflicts
from core.domain.branch_plan import BranchOp, BranchOutcome, SecondPhase, plan_branch_batch
from core.domain.errors import RecordedCode
from core.domain.transfers import Phase, RecordColumns, RequestMode, Transfer, TransferResult
from core.runtime import tracing
from shards.contract import Shards, ShardSession
from shards.phase_state import PhaseRow, PhaseUpdate, SecondState

# The record's phase for each protocol's two endings.
FINAL_PHASES: dict[tuple[RequestMode, SecondPhase], Phase] = {
    ("tcc", "confirm"): "confirmed",
    ("tcc", "cancel"): "cancelled",
    ("saga", "confirm"): "completed",
    ("saga", "cancel"): "compensated",
}


@asynccontextmanager
async def traced(
    opening: AbstractAsyncContextManager[ShardSession], name: str, **attributes: str
) -> AsyncIterator[ShardSession]:
    """A step's session, inside its span (tracing.phase: nothing when tracing is off)."""
    with tracing.phase(name, **attributes):
        async with opening as session:
            yield session


@dataclass(frozen=True)
class DebitStart:
    """What the first step made of one transfer."""

    # held: Try applied; final: recorded before, or refused now; conflict: the id belongs to
    # another request; resume: started before, not finished (its phase row says where).
    kind: Literal["held", "final", "conflict", "resume"]
    result: TransferResult | None = None
    phase: PhaseRow | None = None


def record(transfer: Transfer, second_phase: SecondPhase, error_code: RecordedCode | None) -> TransferResult:
    return TransferResult(
        transfer=transfer,
        status="success" if second_phase == "confirm" else "failed",
        error_code=error_code if second_phase == "cancel" else None,
        protocol=transfer.mode,
        phase=FINAL_PHASES[(transfer.mode, second_phase)],
    )


async def try_debits(
    shards: Shards, shard: str, transfers: list[Transfer], elsewhere: Awaitable[dict[str, TransferResult]]
) -> list[DebitStart]:
    """Step one on the debit shard: Try (hold for TC/C, debit for Saga) and the phase-state row,
    or the replay of what is already recorded. `elsewhere`: the ids' records on other shards
    (a future: read beside this step's BEGIN and locks)."""
    assert len({t.transaction_id for t in transfers}) == len(transfers), "one transaction id once per batch"
    ids = [t.transaction_id for t in transfers]

    async def step() -> list[DebitStart]:
        async with traced(shards.atomic(shard), f"{transfers[0].mode}.try_debit", shard=shard) as session:
            read = await session.read_step(
                [t.from_account for t in transfers if t.from_account], ids, phases=True, records=True
            )
            stored = {**await elsewhere, **read.records}
            starts: list[DebitStart | None] = []
            fresh: list[Transfer] = []
            for transfer in transfers:
                earlier = stored.get(transfer.transaction_id)
                phase = read.phases.get(transfer.transaction_id)
                if earlier is not None:
                    same = earlier.transfer.movement == transfer.movement
                    starts.append(DebitStart("final", earlier) if same else DebitStart("conflict"))
                elif phase is not None:
                    same = phase.transfer.movement == transfer.movement
                    starts.append(DebitStart("resume", phase=phase) if same else DebitStart("conflict"))
                else:
                    starts.append(None)
                    fresh.append(transfer)
            plan = plan_branch_batch([BranchOp(t, "debit", "try") for t in fresh], read.accounts, read.barrier)
            held = [t for t, o in zip(fresh, plan.outcomes, strict=True) if o.ok]
            refused = [record(t, "cancel", o.error_code) for t, o in zip(fresh, plan.outcomes, strict=True) if not o.ok]
            created_at = await session.write_step(
                plan.postings.changes,
                RecordColumns.of(refused),
                plan.postings.events,
                plan.barrier_inserts,
                opened=held,
            )
        outcome_of = dict(zip([t.transaction_id for t in fresh], plan.outcomes, strict=True))
        refused_by_id = {r.transfer.transaction_id: r for r in refused}
        results: list[DebitStart] = []
        for transfer, start in zip(transfers, starts, strict=True):
            if start is not None:
                results.append(start)
            elif outcome_of[transfer.transaction_id].ok:
                results.append(DebitStart("held"))
            else:
                results.append(DebitStart("final", refused_by_id[transfer.transaction_id].stamped(created_at)))
        return results

    return await retry_conflicts(step)


async def run_branch_ops(shards: Shards, shard: str, ops: list[BranchOp]) -> list[BranchOutcome]:
    """Branch operations that touch no phase state (the credit side), in one local transaction."""

    async def step() -> list[BranchOutcome]:
        async with traced(
            shards.atomic(shard), f"{ops[0].transfer.mode}.{ops[0].operation}_credit", shard=shard
        ) as session:
            read = await session.read_step([op.account_id for op in ops], [op.transfer.transaction_id for op in ops])
            plan = plan_branch_batch(ops, read.accounts, read.barrier)
            await session.write_step(
                plan.postings.changes, RecordColumns.of([]), plan.postings.events, plan.barrier_inserts
            )
        return plan.outcomes

    return await retry_conflicts(step)


@dataclass(frozen=True)
class Decision:
    transfer: Transfer
    wanted: SecondPhase
    error_code: RecordedCode | None  # why, for cancel
    out_of_order: bool


async def second_phase_debits(
    shards: Shards, shard: str, decisions: list[Decision], final_state: SecondState
) -> list[TransferResult]:
    """On the debit shard, under the phase-state row lock: the first writer of second_phase
    decides (coordinator or recovery); then Confirm or Cancel of the debit branch, the
    phase-state update and the transfer's record, all in one local transaction."""
    ids = [d.transfer.transaction_id for d in decisions]

    async def step() -> list[TransferResult]:
        async with traced(shards.atomic(shard), f"{decisions[0].transfer.mode}.decide_debit", shard=shard) as session:
            read = await session.read_step(
                [d.transfer.from_account for d in decisions if d.transfer.from_account],
                ids,
                phases=True,
                records=True,
            )
            ops, updates, new_records = [], [], []
            for decision in decisions:
                phase = read.phases.get(decision.transfer.transaction_id)
                assert phase is not None, f"no phase state for {decision.transfer.transaction_id} on {shard}"
                actual = phase.second_phase or decision.wanted
                code = phase.error_code if phase.second_phase else decision.error_code
                if actual == "cancel" and code is None:
                    code = "transfer_aborted"
                ops.append(BranchOp(phase.transfer, "debit", actual))
                if phase.second_state != "done":
                    updates.append(
                        PhaseUpdate(
                            phase.transfer.transaction_id,
                            actual,
                            final_state,
                            code if actual == "cancel" else None,
                            decision.out_of_order,
                        )
                    )
                if phase.transfer.transaction_id not in read.records:
                    new_records.append(record(phase.transfer, actual, code))
            plan = plan_branch_batch(ops, read.accounts, read.barrier)
            created_at = await session.write_step(
                plan.postings.changes,
                RecordColumns.of(new_records),
                plan.postings.events,
                plan.barrier_inserts,
                advanced=updates,
            )
        fresh = {r.transfer.transaction_id: r.stamped(created_at) for r in new_records}
        return [fresh.get(i) or read.records[i] for i in ids]

    return await retry_conflicts(step)


async def mark_done(shards: Shards, shard: str, transfers: list[Transfer]) -> list[Transfer]:
    """Phase state done for these transfers (their every branch has finished): one statement,
    its own transaction (no BEGIN and COMMIT round trips around it)."""

    async def step() -> list[Transfer]:
        async with traced(shards.session(shard), f"{transfers[0].mode}.mark_done", shard=shard) as session:
            await session.mark_done([t.transaction_id for t in transfers])
        return transfers

    return await retry_conflicts(step)


async def unfinished(shards: Shards, shard: str, older_than_ms: int, limit: int) -> list[PhaseRow]:
    async with shards.session(shard) as session:
        return await session.select_unfinished(older_than_ms, limit)
