"""The transaction ids this process is working on: one id is in flight once per process, and
a concurrent retry waits for the first instead of racing it. Bounded: past the bound the
process refuses new work (overloaded) rather than grow without limit."""
from __future__ import annotations

import asyncio

from coordinator.domain.errors import WalletError
from coordinator.domain.transfers import TransferResult

INFLIGHT_MAX = 100_000


def overloaded() -> WalletError:
    return WalletError("overloaded", f"this coordinator has {INFLIGHT_MAX} transfers in flight; retry shortly "
                                     "with the same transaction_id")


class InFlight:
    def __init__(self, size_max: int = INFLIGHT_MAX) -> None:
        assert size_max >= 1
        self.size_max = size_max
        self.futures: dict[str, asyncio.Future[TransferResult]] = {}

    def __len__(self) -> int:
        return len(self.futures)

    def __contains__(self, transaction_id: object) -> bool:
        return transaction_id in self.futures

    def running(self, transaction_id: str) -> asyncio.Future[TransferResult] | None:
        return self.futures.get(transaction_id)

    @property
    def full(self) -> bool:
        return len(self.futures) >= self.size_max

    def register(self, transaction_id: str) -> asyncio.Future[TransferResult]:
        assert transaction_id not in self.futures, f"{transaction_id} is already in flight"
        if self.full:
            raise overloaded()
        future: asyncio.Future[TransferResult] = asyncio.get_running_loop().create_future()
        self.futures[transaction_id] = future
        return future

    def finish(self, transaction_id: str, future: asyncio.Future[TransferResult],
               answer: TransferResult | BaseException) -> None:
        """Hand the answer to the waiters (if any) and forget the id."""
        if self.futures.get(transaction_id) is future:
            del self.futures[transaction_id]
        if future.done():
            return
        if isinstance(answer, BaseException):
            future.set_exception(answer)
            future.exception()  # mark retrieved: waiters, if any, re-raise it themselves
        else:
            future.set_result(answer)
