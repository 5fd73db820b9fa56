"""Group commit's applier with no database: batch size and queue bounds, the wait for a batch
to fill, failures and cancellation handed to every waiter, and observers."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from coordinator.service.group_commit import BatchApplier
from core.domain.errors import ConfigurationError
from core.runtime.settings import BatchLimits


class Recorder:
    """An apply function that records each batch and answers item * 10; it can be held."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.gate = asyncio.Event()
        self.gate.set()

    async def __call__(self, batch: list[int]) -> list[int]:
        self.batches.append(list(batch))
        await self.gate.wait()
        return [item * 10 for item in batch]


async def started(limits: BatchLimits, apply: Recorder) -> BatchApplier[int, int]:
    applier: BatchApplier[int, int] = BatchApplier("test", apply, limits)
    applier.start()
    return applier


@pytest.mark.parametrize(("items", "size_max", "workers"), [(1, 1, 1), (10, 3, 1), (250, 100, 2), (1000, 1000, 4)])
async def test_batches_keep_order_and_their_bound(items: int, size_max: int, workers: int) -> None:
    """One outcome per item, in order; no batch over batch_size_max; every item applied once."""
    apply = Recorder()
    apply.gate.clear()  # let the queue fill before the first batch is applied
    applier = await started(
        BatchLimits(batch_size_max=size_max, workers=workers, queue_size_max=max(items, size_max)), apply
    )
    try:
        ticket = await applier.enqueue(list(range(items)))
        apply.gate.set()
        assert await ticket == [item * 10 for item in range(items)]
    finally:
        await applier.stop()
    assert all(1 <= len(batch) <= size_max for batch in apply.batches)
    assert sorted(item for batch in apply.batches for item in batch) == list(range(items))
    assert applier.items_applied == items and applier.batches_applied == len(apply.batches)


async def test_a_call_split_across_batches_gets_every_outcome_in_order_and_one_failure_each() -> None:
    """A call's items may be taken by several batches (and batches mix calls): each item gets
    its own batch's outcome, and a failed batch fails only the items it held."""
    calls = 0

    async def second_fails(batch: list[int]) -> list[int]:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise OSError("the shard went away")
        return [item * 10 for item in batch]

    applier: BatchApplier[int, int] = BatchApplier(
        "split", second_fails, BatchLimits(batch_size_max=3, queue_size_max=100, workers=1)
    )
    applier.start()
    try:
        # Neither enqueue yields: both calls are queued before the first batch is taken,
        # so the batches are [1 2 3] [4 5 6] [7].
        first, second = await applier.enqueue([1, 2]), await applier.enqueue([3, 4, 5, 6, 7])
        assert await first == [10, 20]
        outcomes = await second
        assert outcomes[0] == 30 and outcomes[4] == 70
        assert all(isinstance(o, OSError) for o in outcomes[1:4]), outcomes
    finally:
        await applier.stop()


async def test_a_full_queue_holds_submitters_back() -> None:
    """Backpressure: an enqueue that would pass queue_size_max waits until a batch is taken."""
    apply = Recorder()
    apply.gate.clear()
    applier = await started(BatchLimits(batch_size_max=2, queue_size_max=4, workers=1), apply)
    try:
        first = await applier.enqueue([0, 1, 2, 3])  # one batch of 2 taken, 2 pending
        await asyncio.sleep(0.01)
        third = asyncio.create_task(applier.enqueue([4, 5, 6]))  # 2 + 3 > 4: waits
        await asyncio.sleep(0.05)
        assert not third.done(), "the enqueue waits for room"
        assert applier.pending_items == 2
        apply.gate.set()
        later = await asyncio.wait_for(third, 2)
        assert await first + await later == [0, 10, 20, 30, 40, 50, 60]
    finally:
        await applier.stop()


async def test_more_items_than_the_queue_holds_is_a_caller_bug() -> None:
    applier = await started(BatchLimits(batch_size_max=2, queue_size_max=4, workers=1), Recorder())
    try:
        with pytest.raises(AssertionError):
            await applier.enqueue(list(range(5)))
    finally:
        await applier.stop()


async def test_no_wait_sends_a_lone_item_at_once_and_a_wait_gathers_more() -> None:
    """batch_wait_ms 0: a lone request is its own batch. A wait: items arriving within it
    join the batch, and the batch leaves once the wait is over even if not full."""
    apply = Recorder()
    at_once = await started(BatchLimits(batch_size_max=100, workers=1), apply)
    try:
        assert await at_once.submit(1) == 10
        assert apply.batches == [[1]]
    finally:
        await at_once.stop()

    apply = Recorder()
    waiting = await started(BatchLimits(batch_size_max=100, batch_wait_ms=50, workers=1), apply)
    try:
        loop = asyncio.get_running_loop()
        began = loop.time()
        first = asyncio.create_task(waiting.submit(1))
        await asyncio.sleep(0.01)
        second = asyncio.create_task(waiting.submit(2))
        assert (await first, await second) == (10, 20)
        assert apply.batches == [[1, 2]], "the second arrived within the wait and shared the batch"
        assert loop.time() - began < 1.0, "the wait is bounded"
    finally:
        await waiting.stop()


async def test_a_full_batch_does_not_wait() -> None:
    apply = Recorder()
    applier = await started(BatchLimits(batch_size_max=3, batch_wait_ms=100, workers=1), apply)
    try:
        loop = asyncio.get_running_loop()
        began = loop.time()
        assert await (await applier.enqueue([1, 2, 3])) == [10, 20, 30]
        assert loop.time() - began < 0.09, "a batch already at batch_size_max leaves at once"
    finally:
        await applier.stop()


async def test_a_failed_batch_fails_each_of_its_waiters_and_the_next_batch_runs() -> None:
    calls = 0

    async def flaky(batch: list[int]) -> list[int]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise OSError("the shard went away")
        return batch

    applier: BatchApplier[int, int] = BatchApplier("flaky", flaky, BatchLimits(batch_size_max=10, workers=1))
    applier.start()
    try:
        failed = await applier.enqueue([1, 2])
        assert [(type(e), str(e)) for e in await failed] == [(OSError, "the shard went away")] * 2
        assert await applier.submit(3) == 3, "the applier survives a failed batch"
    finally:
        await applier.stop()


async def test_stop_fails_the_batch_in_flight_and_every_pending_item() -> None:
    """Cancellation: nothing is left waiting forever when the service shuts down."""
    apply = Recorder()
    apply.gate.clear()
    applier = await started(BatchLimits(batch_size_max=1, workers=1), apply)
    ticket = await applier.enqueue([1, 2, 3])
    await asyncio.sleep(0.01)  # item 1 is in flight, 2 and 3 pending
    await applier.stop()
    outcomes = await asyncio.wait_for(ticket, 1)
    assert all(isinstance(o, RuntimeError) and "shutting down" in str(o) for o in outcomes), outcomes
    assert not applier.tasks and not applier.pending and applier.pending_items == 0


async def test_a_cancelled_submitter_does_not_stop_the_applier() -> None:
    apply = Recorder()
    apply.gate.clear()
    applier = await started(BatchLimits(batch_size_max=10, workers=1), apply)
    try:
        waiter = asyncio.create_task(applier.submit(1))
        await asyncio.sleep(0.01)
        waiter.cancel()
        apply.gate.set()
        assert await applier.submit(2) == 20
        assert applier.tasks and not any(task.done() for task in applier.tasks)
    finally:
        await applier.stop()


async def test_observers_see_every_batch_even_when_added_later() -> None:
    """The observer list is shared: added after the applier was built, it still sees batches."""
    seen: list[tuple[str, int]] = []
    observers: list = []
    applier: BatchApplier[int, int] = BatchApplier("watched", Recorder(), BatchLimits(workers=1), observers)
    applier.start()
    try:
        await applier.submit(1)
        observers.append(lambda name, size: seen.append((name, size)))
        await (await applier.enqueue([2, 3]))
    finally:
        await applier.stop()
    assert seen and all(name == "watched" for name, _ in seen) and sum(size for _, size in seen) == 2


@pytest.mark.parametrize(
    ("limits", "message"),
    [
        ({"batch_size_max": 0}, "WALLET_BATCH_SIZE_MAX must be in 1..10000, got 0"),
        ({"batch_wait_ms": 500}, "WALLET_BATCH_WAIT_MS must be in 0..100, got 500"),
        ({"workers": 0}, "WALLET_BATCH_WORKERS must be in 1..16, got 0"),
        ({"batch_size_max": 50, "queue_size_max": 10}, "the queue (10) must hold at least one batch (50)"),
    ],
)
def test_bad_limits_are_refused_with_the_setting_named(limits: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError) as refused:
        BatchLimits(**limits)
    assert str(refused.value) == message


async def test_the_next_batch_starts_beside_one_in_flight_only_once_it_lets_it() -> None:
    """Protects the overlap rule (runtime/gates.py): with two workers, a second batch starts
    while the first is in flight only after the first called let_next_start()."""
    from core.runtime.gates import let_next_start

    started: list[list[int]] = []
    let_go, finish = asyncio.Event(), asyncio.Event()

    async def apply(batch: list[int]) -> list[int]:
        started.append(list(batch))
        if len(started) == 1:
            await let_go.wait()
            let_next_start()
            await finish.wait()
        return batch

    applier: BatchApplier[int, int] = BatchApplier("gated", apply, BatchLimits(batch_size_max=1, workers=2))
    applier.start()
    try:
        first = await applier.enqueue([1])
        await asyncio.sleep(0.01)
        second = await applier.enqueue([2])
        await asyncio.sleep(0.05)
        assert started == [[1]], "the second batch waits while the first holds the gate"
        let_go.set()
        assert await asyncio.wait_for(second, 1) == [2], "once let, it runs beside the first"
        assert not first.done()
        finish.set()
        assert await first == [1]
    finally:
        await applier.stop()
