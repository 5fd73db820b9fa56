"""What TC/C and Saga share: step one on the debit shards, then a protocol-specific drive.

A flow is one transfer after its debit-side Try. `drive` moves flows forward; the
recovery worker calls `resume` with the flows it finds unfinished in phase state, and
the same code finishes them. Steps run one local transaction per shard per batch,
concurrently across shards; no lock is held between steps.
"""
from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from dataclasses import dataclass
from typing import Awaitable, Callable, Iterable, TypeVar
from uuid import UUID

from coordinator import branches, fault_points
from coordinator.logs import log_phase
from coordinator.branch_plan import BranchOp, BranchOutcome
from coordinator.domain import Transfer, TransferResult
from coordinator.local import CONFLICT
from coordinator.two_phase import FindElsewhere
from shard_router.topology import Topology
from shards.branches import PhaseRow
from shards.pool import ShardPools
log = logging.getLogger("wallet.branches")
Outcome = TransferResult | str | Exception
Item = TypeVar("Item")
Answer = TypeVar("Answer")


@dataclass(frozen=True)
class Flow:
    transfer: Transfer
    second_phase: str | None = None  # already decided (a resumed flow)
    error_code: str | None = None


class BranchProtocol:
    mode = ""

    def __init__(self, pools: ShardPools, topology: Callable[[], Topology], find_elsewhere: FindElsewhere) -> None:
        assert self.mode in ("tcc", "saga"), "subclasses set mode"
        self.pools = pools
        self.topology = topology
        self.find_elsewhere = find_elsewhere

    def debit_shard(self, transfer: Transfer) -> str:
        assert transfer.from_account is not None
        return self.topology().shard_of(transfer.from_account)

    def credit_shard(self, transfer: Transfer) -> str:
        return self.topology().shard_of(transfer.to_account)

    async def per_shard(
        self, items: Iterable[Item], shard_of: Callable[[Item], str],
        step: Callable[[str, list[Item]], Awaitable[list[Answer]]],
    ) -> list[tuple[Item, Answer | Exception]]:
        """Run `step` once per shard over that shard's items, all shards at once. A shard's
        failure becomes each of its items' answer; the other shards carry on."""
        groups: dict[str, list[Item]] = defaultdict(list)
        for item in items:
            groups[shard_of(item)].append(item)
        shards = sorted(groups)
        answers = await asyncio.gather(*(step(shard, groups[shard]) for shard in shards), return_exceptions=True)
        paired: list[tuple[Item, Answer | Exception]] = []
        for shard, answer in zip(shards, answers):
            if isinstance(answer, BaseException):
                if not isinstance(answer, Exception):
                    raise answer
                paired.extend((item, answer) for item in groups[shard])
            else:
                assert len(answer) == len(groups[shard])
                paired.extend(zip(groups[shard], answer))
        return paired

    async def apply_batch(self, transfers: list[Transfer]) -> list[Outcome]:
        debit_shards = {self.debit_shard(t) for t in transfers}
        elsewhere = await self.find_elsewhere(debit_shards, [t.transaction_id for t in transfers])
        starts = await self.per_shard(
            transfers, self.debit_shard,
            lambda shard, group: branches.try_debits(self.pools, shard, group, elsewhere),
        )
        log_phase(log, f"{self.mode}.started_debit", [t.transaction_id for t in transfers])
        fault_points.reach(f"{self.mode}.after_try_debit" if self.mode == "tcc" else "saga.after_debit")
        outcomes: dict[UUID, Outcome] = {}
        flows: list[Flow] = []
        for transfer, start in starts:
            if isinstance(start, Exception):
                outcomes[transfer.transaction_id] = start
            elif start.kind == "final":
                assert start.result is not None
                outcomes[transfer.transaction_id] = start.result
            elif start.kind == "conflict":
                outcomes[transfer.transaction_id] = CONFLICT
            elif start.kind == "held":
                flows.append(Flow(transfer))
            else:
                assert start.phase is not None
                flows.append(flow_of(start.phase))
        outcomes.update(await self.drive(flows))
        return [outcomes[t.transaction_id] for t in transfers]

    async def resume(self, phases: list[PhaseRow]) -> dict[UUID, Outcome]:
        return await self.drive([flow_of(phase) for phase in phases if phase.transfer.mode == self.mode])

    async def drive(self, flows: list[Flow]) -> dict[UUID, Outcome]:
        raise NotImplementedError

    async def try_credits(self, flows: list[Flow]) -> list[tuple[Flow, BranchOutcome | Exception]]:
        return await self.per_shard(
            flows, lambda f: self.credit_shard(f.transfer),
            lambda shard, group: branches.run_branch_ops(
                self.pools, shard, [BranchOp(f.transfer, "credit", "try") for f in group]),
        )

    async def decide_debits(self, decisions: list[branches.Decision], final_state: str) -> list[tuple[branches.Decision, TransferResult | Exception]]:
        return await self.per_shard(
            decisions, lambda d: self.debit_shard(d.transfer),
            lambda shard, group: branches.second_phase_debits(self.pools, shard, group, final_state),
        )


def flow_of(phase: PhaseRow) -> Flow:
    return Flow(phase.transfer, phase.second_phase, phase.error_code)
