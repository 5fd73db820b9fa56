"""Which group-commit applier takes a transfer: one per shard for transfers within one shard,
one per cross-shard protocol. Several batches of each are in flight at once; the lock order
(shard name, then account id) keeps them from deadlocking across servers. Appliers for shards
a topology switch adds start when they arrive, with the same observers."""
from __future__ import annotations

from typing import Awaitable, Callable

from coordinator.domain.outcomes import Outcome
from coordinator.domain.transfers import Transfer
from coordinator.runtime.fan_out import fan_out
from coordinator.runtime.settings import BatchLimits
from coordinator.service.group_commit import BatchApplier, BatchObserver
from shard_router.topology import Topology

TransferApplier = BatchApplier[Transfer, Outcome]
ApplyOneShard = Callable[[str, list[Transfer]], Awaitable[list[Outcome]]]
ApplyCrossShard = Callable[[list[Transfer]], Awaitable[list[Outcome]]]


class Appliers:
    def __init__(self, limits: BatchLimits, one_shard: ApplyOneShard, cross_shard: dict[str, ApplyCrossShard]) -> None:
        self.limits = limits
        self.one_shard = one_shard
        self.cross_shard = cross_shard
        self.observers: list[BatchObserver] = []  # shared by every applier, present and future
        self.local: dict[str, TransferApplier] = {}  # per shard
        self.cross: dict[str, TransferApplier] = {}  # per protocol
        self.running = False

    def start(self, shards: list[str]) -> None:
        assert not self.running, "appliers already started"
        self.running = True
        for shard in shards:
            self.add_shard(shard)
        for mode, apply in self.cross_shard.items():
            self.cross[mode] = self._started(mode, apply)

    def add_shard(self, shard: str) -> None:
        if self.running and shard not in self.local:
            self.local[shard] = self._started(shard, lambda batch: self.one_shard(shard, batch))

    def _started(self, name: str, apply: ApplyCrossShard) -> TransferApplier:
        applier: TransferApplier = BatchApplier(name, apply, self.limits, self.observers)
        applier.start()
        return applier

    def observe(self, observer: BatchObserver) -> None:
        """Tell `observer` of every batch of every applier, including those started later."""
        if observer not in self.observers:
            self.observers.append(observer)

    def for_transfer(self, transfer: Transfer, topology: Topology) -> TransferApplier:
        credit_shard = topology.shard_of(transfer.to_account)
        debit_shard = topology.shard_of(transfer.from_account) if transfer.from_account else credit_shard
        if debit_shard == credit_shard:
            return self.local[debit_shard]
        return self.cross[transfer.mode]

    async def stop(self) -> None:
        everyone = [*self.local.values(), *self.cross.values()]
        self.local, self.cross, self.running = {}, {}, False
        await fan_out(everyone, lambda applier: applier.stop())
