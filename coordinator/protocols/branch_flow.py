"""What TC/C and Saga share: step one on the debit shards, then a protocol-specific drive.

A flow is one transfer after its debit-side Try. `drive` moves flows forward; the
recovery worker calls `resume` with the flows it finds unfinished in phase state, and
the same code finishes them. Steps run one local transaction per shard per batch,
concurrently across shards; no lock is held between steps.

A shard that fails a step fails it for its own transfers only: their outcome is a
refusal (shard_unavailable: unknown until retried, and recovery finishes what was
started) or a reroute (the shard does not serve the account); the other shards go on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar

from coordinator.protocols import branch_steps
from coordinator.protocols.prior_records import PriorRecords
from core.domain.branch_plan import BranchOp, BranchOutcome, SecondPhase
from core.domain.errors import RecordedCode
from core.domain.outcomes import Outcome, Refused, Reroute, conflict, unavailable
from core.domain.transfers import Transfer, TransferResult
from core.runtime import fault_points
from core.runtime.fan_out import fan_out_groups, settled
from core.runtime.logs import log_phase
from shard_router.topology import Topology
from shards.contract import Shards
from shards.errors import AccountsMoved, ShardError
from shards.phase_state import PhaseRow, SecondState

log = logging.getLogger("wallet.branches")
Item = TypeVar("Item")
Answer = TypeVar("Answer")
# A step's answer for one item, or why its shard could not give one.
Failure = Refused | Reroute


@dataclass(frozen=True)
class Flow:
    transfer: Transfer
    second_phase: SecondPhase | None = None  # already decided (a resumed flow)
    error_code: RecordedCode | None = None


def failure_of(error: Exception) -> Failure:
    """The typed answer for a shard's expected failure; anything else is a bug and is raised."""
    if isinstance(error, AccountsMoved):
        return Reroute(tuple(error.account_ids))
    if isinstance(error, ShardError):
        return unavailable(error.shard)
    raise error


class BranchFlow:
    mode = ""

    def __init__(self, shards: Shards, topology: Callable[[], Topology]) -> None:
        assert self.mode in ("tcc", "saga"), "subclasses set mode"
        self.shards = shards
        self.topology = topology

    def debit_shard(self, transfer: Transfer) -> str:
        assert transfer.from_account is not None
        return self.topology().shard_of(transfer.from_account)

    def credit_shard(self, transfer: Transfer) -> str:
        return self.topology().shard_of(transfer.to_account)

    async def per_shard(
        self,
        items: Iterable[Item],
        shard_of: Callable[[Item], str],
        step: Callable[[str, list[Item]], Awaitable[list[Answer]]],
    ) -> list[tuple[Item, Answer | Failure]]:
        """Run `step` once per shard over that shard's items, all shards at once. A shard's
        failure becomes each of its items' answer; the other shards carry on."""
        answered, failed = await fan_out_groups(items, shard_of, step)
        paired: list[tuple[Item, Answer | Failure]] = list(answered)
        for shard, (members, error) in failed.items():
            failure = failure_of(error)
            log.warning("%s step on %s failed for %s transfers: %r", self.mode, shard, len(members), error)
            paired.extend((item, failure) for item in members)
        return paired

    async def apply_batch(self, batch: list[Transfer], records: PriorRecords) -> list[Outcome]:
        # One id twice in a batch (a retry queued while its first request still waited, that
        # request given up by its caller): applied once; the second answers as the first, or
        # is refused if it moves other money. Found by the simulator (docs/simulation.md).
        first_of: dict[str, Transfer] = {}
        for transfer in batch:
            first_of.setdefault(transfer.transaction_id, transfer)
        transfers = list(first_of.values())
        debit_shards = {self.debit_shard(t) for t in transfers}
        # Records elsewhere (an id reused with another debit account), read beside step one's
        # BEGIN and locks; a shard that does not answer fails the step that needs it.
        elsewhere = asyncio.ensure_future(records.find([t.transaction_id for t in transfers], skip=debit_shards))
        try:
            starts = await self.per_shard(
                transfers,
                self.debit_shard,
                lambda shard, group: branch_steps.try_debits(self.shards, shard, group, elsewhere),
            )
        finally:
            await settled(elsewhere)
        log_phase(log, f"{self.mode}.started_debit", [t.transaction_id for t in transfers])
        fault_points.reach(f"{self.mode}.after_try_debit" if self.mode == "tcc" else "saga.after_debit")
        outcomes: dict[str, Outcome] = {}
        flows: list[Flow] = []
        for transfer, start in starts:
            if isinstance(start, (Refused, Reroute)):
                outcomes[transfer.transaction_id] = start
            elif start.kind == "final":
                assert start.result is not None
                outcomes[transfer.transaction_id] = start.result
            elif start.kind == "conflict":
                outcomes[transfer.transaction_id] = conflict(transfer.transaction_id)
            elif start.kind == "held":
                flows.append(Flow(transfer))
            else:
                assert start.phase is not None
                flows.append(flow_of(start.phase))
        outcomes.update(await self.drive(flows))
        return [
            outcomes[t.transaction_id]
            if t.movement == first_of[t.transaction_id].movement
            else conflict(t.transaction_id)
            for t in batch
        ]

    async def resume(self, phases: list[PhaseRow]) -> dict[str, Outcome]:
        return await self.drive([flow_of(phase) for phase in phases if phase.transfer.mode == self.mode])

    async def drive(self, flows: list[Flow]) -> dict[str, Outcome]:
        raise NotImplementedError

    async def try_credits(self, flows: list[Flow]) -> list[tuple[Flow, BranchOutcome | Failure]]:
        return await self.per_shard(
            flows,
            lambda f: self.credit_shard(f.transfer),
            lambda shard, group: branch_steps.run_branch_ops(
                self.shards, shard, [BranchOp(f.transfer, "credit", "try") for f in group]
            ),
        )

    async def decide_debits(
        self, decisions: list[branch_steps.Decision], final_state: SecondState
    ) -> list[tuple[branch_steps.Decision, TransferResult | Failure]]:
        return await self.per_shard(
            decisions,
            lambda d: self.debit_shard(d.transfer),
            lambda shard, group: branch_steps.second_phase_debits(self.shards, shard, group, final_state),
        )


def decided_before(flows: list[Flow]) -> list[branch_steps.Decision]:
    """The decisions of resumed flows whose second phase was already chosen."""
    return [branch_steps.Decision(f.transfer, f.second_phase, f.error_code, False) for f in flows if f.second_phase]


def decision_after(flow: Flow, credited: BranchOutcome) -> branch_steps.Decision:
    """What the credit branch's answer decides: Confirm if it took the operation, else Cancel."""
    if credited.ok:
        return branch_steps.Decision(flow.transfer, "confirm", None, credited.out_of_order)
    return branch_steps.Decision(flow.transfer, "cancel", credited.error_code, credited.out_of_order)


def flow_of(phase: PhaseRow) -> Flow:
    return Flow(phase.transfer, phase.second_phase, phase.error_code)
