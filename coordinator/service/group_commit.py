"""Group commit: requests for one shard queue up and are applied as one batch.

No waiting is added under low load (a lone request goes at once); under load the
requests that arrive while a batch is in flight form the next one. Every limit is
a named, bounded setting.
"""
from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Awaitable, Callable, Generic, TypeVar

from coordinator.runtime.settings import BatchLimits

log = logging.getLogger("wallet.group_commit")

Item = TypeVar("Item")
Outcome = TypeVar("Outcome")
# Told of every batch as it is taken: (applier name, items in the batch). Called on the
# event loop, so it must be quick (a histogram observation).
BatchObserver = Callable[[str, int], None]


class BatchApplier(Generic[Item, Outcome]):
    """Feeds batches of items to `apply_batch`, which returns one outcome per item, in order.

    The queue is a deque of (item, future) bounded by `queue_size_max`: a caller with many
    items (the batch API) enqueues them in one step, with no task or queue operation per
    item; submitters wait for room beyond the bound (backpressure).

    `observers` is shared, not copied: an observer added to the list later sees the batches
    of every applier built with it."""

    def __init__(
        self,
        name: str,
        apply_batch: Callable[[list[Item]], Awaitable[list[Outcome]]],
        limits: BatchLimits,
        observers: list[BatchObserver] | None = None,
    ) -> None:
        self.name = name
        self.apply_batch = apply_batch
        self.limits = limits
        self.observers = observers if observers is not None else []
        self.pending: deque[tuple[Item, asyncio.Future[Outcome]]] = deque()
        self.arrived = asyncio.Event()  # set while items are pending
        self.room = asyncio.Event()  # set while the queue is below its bound
        self.room.set()
        self.tasks: list[asyncio.Task[None]] = []
        self.batches_applied = 0
        self.items_applied = 0

    def start(self) -> None:
        assert not self.tasks, f"applier {self.name} already started"
        self.tasks = [
            asyncio.create_task(self._work(), name=f"applier-{self.name}-{index}")
            for index in range(self.limits.workers)
        ]

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.tasks = []
        while self.pending:
            _, future = self.pending.popleft()
            if not future.done():
                future.set_exception(RuntimeError("service is shutting down"))

    async def enqueue(self, items: list[Item]) -> list[asyncio.Future[Outcome]]:
        """Queue every item at once; one future per item, in order."""
        assert self.tasks, f"applier {self.name} is not running"
        assert len(items) <= self.limits.queue_size_max, "more items than the queue holds"
        while len(self.pending) + len(items) > self.limits.queue_size_max:
            self.room.clear()
            await self.room.wait()
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[Outcome]] = [loop.create_future() for _ in items]
        self.pending.extend(zip(items, futures))
        self.arrived.set()
        return futures

    async def submit(self, item: Item) -> Outcome:
        [future] = await self.enqueue([item])
        return await future

    async def _take(self) -> list[tuple[Item, asyncio.Future[Outcome]]]:
        """The next batch: at least one item, at most batch_size_max, waiting up to
        batch_wait_ms after the first for more."""
        limits = self.limits
        while not self.pending:
            self.arrived.clear()
            await self.arrived.wait()
        if limits.batch_wait_ms > 0 and len(self.pending) < limits.batch_size_max:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + limits.batch_wait_ms / 1000
            while len(self.pending) < limits.batch_size_max and (remaining := deadline - loop.time()) > 0:
                self.arrived.clear()
                try:
                    await asyncio.wait_for(self.arrived.wait(), remaining)
                except asyncio.TimeoutError:
                    break
        count = min(len(self.pending), limits.batch_size_max)
        batch = [self.pending.popleft() for _ in range(count)]
        if self.pending:
            self.arrived.set()  # another worker may start the next batch now
        self.room.set()
        return batch

    async def _work(self) -> None:
        while True:
            batch = await self._take()
            if not batch:
                continue  # another worker took them first
            items = [item for item, _ in batch]
            for observe in self.observers:
                observe(self.name, len(items))
            try:
                outcomes = await self.apply_batch(items)
                assert len(outcomes) == len(items), "apply_batch must return one outcome per item"
            except asyncio.CancelledError:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(RuntimeError("service is shutting down"))
                raise
            except Exception as error:  # the batch's outcome goes to each waiter
                for _, future in batch:
                    if not future.done():
                        future.set_exception(error)
                continue
            self.batches_applied += 1
            self.items_applied += len(items)
            for (_, future), outcome in zip(batch, outcomes):
                if not future.done():
                    future.set_result(outcome)
