"""Group commit: requests queue up and what waits is applied as one batch (BatchApplier).

It carries the rounds of transfers (rounds.py) and the shared record reads of each shard
(record_lookup.py). No waiting is added under low load (a lone request goes at once); under
load the requests that arrive while a batch is in flight form the next one. Every limit is
a named, bounded setting.

With tracing on, each call's ticket carries the span context it was queued under (the
request's), and a batch's span links every request it carries (runtime/tracing.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Generic, TypeVar

from core.runtime import tracing
from core.runtime.gates import next_start_gate
from core.runtime.settings import BatchLimits

if TYPE_CHECKING:
    from opentelemetry.trace import SpanContext

log = logging.getLogger("wallet.group_commit")

Item = TypeVar("Item")
Outcome = TypeVar("Outcome")
# Told of every batch as it is taken: (applier name, items in the batch). Called on the
# event loop, so it must be quick (a histogram observation).
BatchObserver = Callable[[str, int], None]


# A bounded adaptive wait, when nothing is in flight to batch behind: a worker that finds
# items waiting while requests keep arriving (the recent gap between arrivals under
# DENSE_GAP_MS) gathers more for as long as they keep coming (each wait at most twice that
# gap) and at most ADAPTIVE_WAIT_MS_MAX; when requests are sparse it goes at once. Under load
# a batch is always in flight and the next forms behind it without any wait.
ADAPTIVE_WAIT_MS_MAX = 2.0
DENSE_GAP_MS = 0.5
GAP_SMOOTHING = 0.2  # weight of the newest gap in its moving average


class Ticket(Generic[Outcome]):
    """One enqueue call's place in the queue: an outcome per item as its batch ends (or the
    error that ended that batch), and one future, resolved with them all once the last is in.

    One future per call rather than per item: a call of a thousand transfers costs the event
    loop one wake-up, not a thousand (docs/figures.md)."""

    __slots__ = ("outcomes", "left", "future", "link")

    def __init__(self, size: int, future: asyncio.Future[list[Outcome | BaseException]]) -> None:
        self.outcomes: list[Outcome | BaseException | None] = [None] * size
        self.left = size
        self.future = future
        self.link: SpanContext | None = None  # the caller's span (tracing on): its batch links it

    def settle(self, start: int, outcomes: Sequence[Outcome | BaseException]) -> None:
        self.outcomes[start : start + len(outcomes)] = outcomes
        self.left -= len(outcomes)
        assert self.left >= 0, "an item settled twice"
        if self.left == 0 and not self.future.done():  # done: the caller gave up (cancelled)
            self.future.set_result(self.outcomes)  # type: ignore[arg-type]  # every slot is filled


class Segment(Generic[Item, Outcome]):
    """One ticket's items in the queue, and how many of them batches have taken."""

    __slots__ = ("ticket", "items", "taken")

    def __init__(self, ticket: Ticket[Outcome], items: list[Item]) -> None:
        self.ticket = ticket
        self.items = items
        self.taken = 0


# A batch's share of one ticket: (ticket, index of its first item, count).
Share = tuple[Ticket[Outcome], int, int]


class BatchApplier(Generic[Item, Outcome]):
    """Feeds batches of items to `apply_batch`, which returns one outcome per item, in order.

    The queue holds each call's items as one stretch (bounded by `queue_size_max` items in
    all): a caller with many items (the batch API) enqueues them in one step, with no task,
    future or queue operation per item; a batch takes items from the front stretches, and
    submitters wait for room beyond the bound (backpressure).

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
        self.pending: deque[Segment[Item, Outcome]] = deque()
        self.pending_items = 0
        self.arrived = asyncio.Event()  # set while items are pending
        self.room = asyncio.Event()  # set while the queue is below its bound
        self.room.set()
        self.tasks: list[asyncio.Task[None]] = []
        self.in_flight = 0  # batches being applied now
        self.holding = 0  # batches in flight that have not let the next start yet
        self.last_arrival_s = 0.0
        self.gap_s = 1.0  # moving average of the time between arrivals
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
            segment = self.pending.popleft()
            segment.ticket.settle(
                segment.taken, [RuntimeError("service is shutting down")] * (len(segment.items) - segment.taken)
            )
        self.pending_items = 0

    async def enqueue(self, items: list[Item]) -> asyncio.Future[list[Outcome | BaseException]]:
        """Queue every item at once. The future's result: one outcome per item, in order; an
        item whose batch failed has the batch's exception in its place."""
        assert self.tasks, f"applier {self.name} is not running"
        assert len(items) <= self.limits.queue_size_max, "more items than the queue holds"
        while self.pending_items + len(items) > self.limits.queue_size_max:
            self.room.clear()
            await self.room.wait()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Outcome | BaseException]] = loop.create_future()
        now = loop.time()
        self.gap_s += GAP_SMOOTHING * (min(now - self.last_arrival_s, 1.0) - self.gap_s)
        self.last_arrival_s = now
        if items:
            ticket: Ticket[Outcome] = Ticket(len(items), future)
            if tracing.enabled:
                ticket.link = tracing.link_here()
            self.pending.append(Segment(ticket, items))
            self.pending_items += len(items)
            self.arrived.set()
        else:
            future.set_result([])
        return future

    async def submit(self, item: Item) -> Outcome:
        [outcome] = await (await self.enqueue([item]))
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    async def _take(self) -> tuple[list[Item], list[Share[Outcome]]]:
        """The next batch: at least one item, at most batch_size_max, waiting up to
        batch_wait_ms after the first for more (or, with none set, the adaptive wait); with
        whose items they are."""
        limits = self.limits
        while not self.pending or self.holding:
            self.arrived.clear()
            await self.arrived.wait()
        if limits.batch_wait_ms > 0 and self.pending_items < limits.batch_size_max:
            await self._gather(limits.batch_wait_ms / 1000, limits.batch_wait_ms / 1000)
        elif not self.in_flight and self.gap_s < DENSE_GAP_MS / 1000 and self.pending_items < limits.batch_size_max:
            await self._gather(ADAPTIVE_WAIT_MS_MAX / 1000, 2 * self.gap_s)
        batch: list[Item] = []
        shares: list[Share[Outcome]] = []
        room = limits.batch_size_max
        while self.pending and room > 0:
            segment = self.pending[0]
            items, taken = segment.items, segment.taken
            count = min(room, len(items) - taken)
            batch.extend(items if taken == 0 and count == len(items) else items[taken : taken + count])
            shares.append((segment.ticket, taken, count))
            room -= count
            if taken + count == len(items):
                self.pending.popleft()
            else:
                segment.taken = taken + count
        self.pending_items -= len(batch)
        if self.pending:
            self.arrived.set()  # another worker may start the next batch now
        self.room.set()
        return batch, shares

    def _span(self, size: int, shares: list[Share[Outcome]]) -> AbstractContextManager[object]:
        """The batch's span, linked to each call it carries (the shared no-op with tracing off)."""
        if not tracing.enabled:
            return tracing.NULL
        return tracing.batch(self.name, size, [ticket.link for ticket, _, _ in shares])

    async def _gather(self, budget_s: float, quiet_s: float) -> None:
        """Wait for more items, at most `budget_s` in all and `quiet_s` since the last arrival."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + budget_s
        while self.pending_items < self.limits.batch_size_max and (remaining := deadline - loop.time()) > 0:
            self.arrived.clear()
            try:
                await asyncio.wait_for(self.arrived.wait(), min(remaining, quiet_s))
            except TimeoutError:
                break

    async def _work(self) -> None:
        while True:
            items, shares = await self._take()
            if not items:
                continue  # another worker took them first
            for observe in self.observers:
                observe(self.name, len(items))
            self.in_flight += 1
            self.holding += 1
            held = True

            def release() -> None:
                nonlocal held
                if held:
                    held = False
                    self.holding -= 1
                    if self.pending:
                        self.arrived.set()

            next_start_gate(release)
            try:
                with self._span(len(items), shares):
                    outcomes = await self.apply_batch(items)
                assert len(outcomes) == len(items), "apply_batch must return one outcome per item"
            except asyncio.CancelledError:
                for ticket, start, count in shares:
                    ticket.settle(start, [RuntimeError("service is shutting down")] * count)
                raise
            except Exception as error:  # the batch's outcome goes to each of its items
                for ticket, start, count in shares:
                    ticket.settle(start, [error] * count)
                continue
            else:
                self.batches_applied += 1
                self.items_applied += len(items)
                offset = 0
                for ticket, start, count in shares:
                    ticket.settle(start, outcomes if count == len(outcomes) else outcomes[offset : offset + count])
                    offset += count
            finally:
                release()
                self.in_flight -= 1
                if self.pending:
                    self.arrived.set()  # a worker held back by this batch may take the next
