"""The transaction ids this process is working on: one id is in flight once per process, and
a concurrent retry waits for the first instead of racing it. Bounded: past the bound the
process refuses new work (overloaded) rather than grow without limit."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from core.domain.errors import WalletError
from core.domain.limits import INFLIGHT_MAX
from core.domain.transfers import TransferResult


def overloaded() -> WalletError:
    return WalletError(
        "overloaded",
        f"this coordinator has {INFLIGHT_MAX} transfers in flight; retry shortly with the same transaction_id",
    )


class InFlight:
    """Ids by the registration (the call) working on them. A future exists only for an id a
    concurrent retry waits on: a call registering a thousand ids makes no future for them."""

    def __init__(self, size_max: int = INFLIGHT_MAX) -> None:
        assert size_max >= 1
        self.size_max = size_max
        self.owners: dict[str, object] = {}  # transaction id -> its registration's owner
        self.waiters: dict[str, asyncio.Future[TransferResult]] = {}

    def __len__(self) -> int:
        return len(self.owners)

    def __contains__(self, transaction_id: object) -> bool:
        return transaction_id in self.owners

    def running(self, transaction_id: str) -> asyncio.Future[TransferResult] | None:
        """None if the id is not in flight; else a future of the running call's answer."""
        if transaction_id not in self.owners:
            return None
        waiter = self.waiters.get(transaction_id)
        if waiter is None:
            waiter = self.waiters[transaction_id] = asyncio.get_running_loop().create_future()
        return waiter

    @property
    def full(self) -> bool:
        return len(self.owners) >= self.size_max

    def register(self, transaction_id: str, owner: object) -> None:
        """`owner`: any object naming the call; only it may finish the registration."""
        assert transaction_id not in self.owners, f"{transaction_id} is already in flight"
        if self.full:
            raise overloaded()
        self.owners[transaction_id] = owner

    def finish(self, transaction_id: str, owner: object, answer: TransferResult | BaseException) -> None:
        """Hand the answer to the waiters (if any) and forget the id; a no-op unless `owner`
        holds the registration (it finished already, or another call holds it now)."""
        if self.owners.get(transaction_id) is not owner:
            return
        del self.owners[transaction_id]
        waiter = self.waiters.pop(transaction_id, None)
        if waiter is None or waiter.done():
            return
        if isinstance(answer, BaseException):
            waiter.set_exception(answer)
            waiter.exception()  # mark retrieved: waiters, if any, re-raise it themselves
        else:
            waiter.set_result(answer)

    def abandon(self, transaction_ids: list[str], owner: object, error: Callable[[], BaseException]) -> None:
        """Finish with `error()` every one of these ids `owner` still holds (a call that
        ended early)."""
        owners = self.owners
        for transaction_id in transaction_ids:
            if owners.get(transaction_id) is owner:
                self.finish(transaction_id, owner, error())
