"""Rounds: every transfer this process is asked for goes into one queue, and what waits there
is applied together as a round.

  enqueue (group_commit.py: bounded, one ticket per call)
    -> a round takes what waits (at most batch_size_max transfers)
    -> its record read: one SELECT per shard for every id of the round, started at once and
       read by its groups beside their BEGIN and locks (record_lookup.SharedRead)
    -> its groups, all at once: per shard, the transfers within that shard (one local
       transaction, protocols/one_shard.py); per cross-shard mode, the others
       (protocols/two_phase.py, tcc.py, saga.py)
    -> one outcome per transfer, in order

One queue rather than one per shard and per protocol: 128 requests in flight used to split
into five queues of a few each, every one paying a batch's statements for a handful of
transfers (one-shard batches averaged 1.95 transfers under REST load), and every batch paid
its own record read on every shard. A round pays the record read once, and each group is as
large as what waited for it (docs/figures.md). Rounds overlap (limits.workers):
a round never waits for the previous one's last round trip: the next round starts once every
group of this one has passed its commit point (runtime/gates.py), so only one round at a time
is taking locks across shards.

Traced (runtime/tracing.py), a round is the span `batch round`, linked to the requests it
carries, and each group the span `group <shard or mode>` inside it: the protocols' phases
nest under their group.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable

from coordinator.protocols.prior_records import PriorRecords
from coordinator.service.group_commit import BatchApplier, BatchObserver
from coordinator.service.record_lookup import RecordLookups
from core.domain.outcomes import Outcome
from core.domain.transfers import Transfer
from core.runtime import tracing
from core.runtime.gates import current_gate, next_start_gate
from core.runtime.settings import BatchLimits
from shard_router.topology import Topology

ApplyOneShard = Callable[[str, list[Transfer], PriorRecords], Awaitable[list[Outcome]]]
ApplyCrossShard = Callable[[list[Transfer], PriorRecords], Awaitable[list[Outcome]]]
# What a round answers per transfer: its outcome, or the exception its group ended with (a bug
# or a shutdown: it fails that group's transfers only).
RoundOutcome = Outcome | Exception
RoundApplier = BatchApplier[Transfer, RoundOutcome]
# Told before a group runs, with its name (a shard, or a cross-shard mode) and size; a test
# may hold a group here to look at its transfers in flight.
GroupHook = Callable[[str, int], Awaitable[None]]
ROUND = "round"  # the name the round itself is observed by (metrics: wallet_batch_size{applier})


def once(action: Callable[[], None]) -> Callable[[], None]:
    done = False

    def first_time_only() -> None:
        nonlocal done
        if not done:
            done = True
            action()

    return first_time_only


def group_of(transfer: Transfer, topology: Topology) -> tuple[bool, str]:
    """(within one shard?, that shard or the cross-shard mode)."""
    credit_shard = topology.shard_of(transfer.to_account)
    if transfer.from_account is None:
        return True, credit_shard
    debit_shard = topology.shard_of(transfer.from_account)
    return (True, debit_shard) if debit_shard == credit_shard else (False, transfer.mode)


def carry_local_transfers(
    groups: dict[tuple[bool, str], list[int]], transfers: list[Transfer], topology: Topology
) -> None:
    """The round's two-phase batch takes the one-shard transfers of the shards it writes
    anyway: on those shards they ride in its branch (recorded as `local`, committed with it),
    and their own group's four statements (BEGIN, lock, write, COMMIT) are not paid. Arrival
    order is kept: the planner decides in it."""
    cross = groups.get((False, "2pc"))
    if cross is None:
        return
    touched = {
        topology.shard_of(account)
        for index in cross
        for account in (transfers[index].from_account, transfers[index].to_account)
        if account is not None
    }
    carried = [key for key in groups if key[0] and key[1] in touched]
    if carried:
        groups[(False, "2pc")] = sorted([*cross, *(index for key in carried for index in groups.pop(key))])


class Rounds:
    def __init__(
        self,
        limits: BatchLimits,
        records: RecordLookups,
        topology: Callable[[], Topology],
        one_shard: ApplyOneShard,
        cross_shard: dict[str, ApplyCrossShard],
    ) -> None:
        self.records = records
        self.topology = topology
        self.one_shard = one_shard
        self.cross_shard = cross_shard
        self.observers: list[BatchObserver] = []  # told of the round and of each of its groups
        self.hooks: list[GroupHook] = []
        self.applier: RoundApplier = BatchApplier(ROUND, self.apply_round, limits, self.observers)
        # Per group name: groups applied and transfers in them (tests and the bench read these).
        self.groups_applied: Counter[str] = Counter()
        self.transfers_applied: Counter[str] = Counter()

    def start(self) -> None:
        self.applier.start()

    async def stop(self) -> None:
        await self.applier.stop()

    async def submit(self, transfer: Transfer) -> Outcome:
        """One transfer's outcome; the exception its group ended with is raised."""
        [outcome] = await (await self.applier.enqueue([transfer]))
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def observe(self, observer: BatchObserver) -> None:
        if observer not in self.observers:
            self.observers.append(observer)

    async def apply_round(self, transfers: list[Transfer]) -> list[RoundOutcome]:
        topology = self.topology()
        groups: dict[tuple[bool, str], list[int]] = {}
        for index, transfer in enumerate(transfers):
            groups.setdefault(group_of(transfer, topology), []).append(index)
        carry_local_transfers(groups, transfers, topology)
        read = self.records.shared_read(sorted(topology.shards), [t.transaction_id for t in transfers])
        locking = len(groups)
        let_next_round_start = current_gate()

        def locked() -> None:  # once per group: the next round starts once every group has committed
            nonlocal locking
            locking -= 1
            if locking == 0:
                let_next_round_start()

        try:
            answers = await asyncio.gather(
                *(
                    self._group(key, [transfers[i] for i in members], read, once(locked))
                    for key, members in groups.items()
                ),
                return_exceptions=True,
            )
        finally:
            await read.close()
        outcomes: list[RoundOutcome | None] = [None] * len(transfers)
        for members, answer in zip(groups.values(), answers, strict=True):
            if isinstance(answer, BaseException) and not isinstance(answer, Exception):
                raise answer  # cancelled: the service is stopping
            for position, index in enumerate(members):
                outcomes[index] = answer if isinstance(answer, Exception) else answer[position]
        assert all(outcome is not None for outcome in outcomes), "every transfer of a round has an outcome"
        return [outcome for outcome in outcomes if outcome is not None]

    async def _group(
        self, key: tuple[bool, str], transfers: list[Transfer], read: PriorRecords, locked: Callable[[], None]
    ) -> list[Outcome]:
        """One group of the round. Two-phase commit calls let_next_start() at its commit point;
        a group that ends has passed it."""
        within_shard, name = key
        next_start_gate(locked)  # this group's task only
        for observe in self.observers:
            observe(name, len(transfers))
        for hook in self.hooks:
            await hook(name, len(transfers))
        try:
            with tracing.phase(f"group {name}", group=name, transfers=len(transfers)):
                if within_shard:
                    outcomes = await self.one_shard(name, transfers, read)
                else:
                    outcomes = await self.cross_shard[name](transfers, read)
        finally:
            locked()
        assert len(outcomes) == len(transfers), "a group answers once per transfer"
        self.groups_applied[name] += 1
        self.transfers_applied[name] += len(transfers)
        return outcomes
