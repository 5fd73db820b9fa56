"""Submission: a validated transfer is registered in flight, queued for a round (rounds.py),
and its outcome there becomes the caller's answer; a transfer whose shard refused its
accounts (a slot moved) is routed again under the same registration."""

from __future__ import annotations

import asyncio

from coordinator.service.inflight import InFlight
from coordinator.service.rounds import RoundOutcome, Rounds
from coordinator.service.routing import Router
from core.domain.errors import WalletError
from core.domain.limits import TRANSFERS_PER_REQUEST_MAX
from core.domain.outcomes import Outcome, Refused, Reroute, conflict
from core.domain.transfers import Transfer, TransferResult


def answer_of(transfer: Transfer, outcome: Outcome) -> TransferResult:
    """The caller's answer from one outcome; raises the WalletError the caller sees."""
    if isinstance(outcome, Refused):
        raise outcome.error()
    assert not isinstance(outcome, Reroute), "a reroute is routed again before it is answered"
    return same_request(transfer, outcome)


def same_request(transfer: Transfer, result: TransferResult) -> TransferResult:
    """The answer to a retry, if it moves the same money as the request that was recorded."""
    if result.transfer.movement != transfer.movement:
        raise conflict(transfer.transaction_id).error()
    return result


class Submission:
    def __init__(self, router: Router, rounds: Rounds, inflight: InFlight) -> None:
        self.router = router
        self.rounds = rounds
        self.inflight = inflight

    async def submit(self, transfer: Transfer) -> TransferResult:
        running = self.inflight.running(transfer.transaction_id)
        if running is not None:  # a concurrent retry waits for the first
            return same_request(transfer, await asyncio.shield(running))
        owner = object()
        self.inflight.register(transfer.transaction_id, owner)
        try:
            result = answer_of(transfer, await self.routed(transfer))
        except BaseException as error:
            self.inflight.finish(transfer.transaction_id, owner, error)
            raise
        self.inflight.finish(transfer.transaction_id, owner, result)
        return result

    async def routed(self, transfer: Transfer) -> Outcome:
        """The transfer's outcome, routed again (bounded) while a shard refuses its accounts."""
        return await self.router.rerouting(
            lambda: self.rounds.submit(transfer), moved=lambda outcome: isinstance(outcome, Reroute)
        )

    async def submit_many(self, transfers: list[Transfer]) -> list[TransferResult | WalletError]:
        """Many transfers at once, each with its own answer. They are queued in one step (no
        task or future per item). An id repeated in the call, or already in flight, takes the
        one-at-a-time path, which waits for the first."""
        assert len(transfers) <= TRANSFERS_PER_REQUEST_MAX, f"at most {TRANSFERS_PER_REQUEST_MAX} transfers per call"
        answers: list[TransferResult | WalletError | None] = [None] * len(transfers)
        placed: list[int] = []
        later: list[int] = []
        owner = object()  # this call's in-flight registrations
        inflight = self.inflight
        mine: list[str] = []
        for index, transfer in enumerate(transfers):
            transaction_id = transfer.transaction_id
            if transaction_id in inflight or inflight.full:
                later.append(index)
                continue
            inflight.register(transaction_id, owner)
            mine.append(transaction_id)
            placed.append(index)

        def settle(index: int, outcome: RoundOutcome | BaseException) -> None:
            transfer = transfers[index]
            if isinstance(outcome, BaseException):  # not a transfer's answer: the call fails
                inflight.finish(transfer.transaction_id, owner, outcome)
                raise outcome
            try:
                result = answer_of(transfer, outcome)
            except WalletError as error:
                inflight.finish(transfer.transaction_id, owner, error)
                answers[index] = error
                return
            inflight.finish(transfer.transaction_id, owner, result)
            answers[index] = result

        async def route_again(index: int) -> None:
            """A slot moved under it: route it alone, still registered as in flight."""
            try:
                outcome: Outcome = await self.routed(transfers[index])
            except WalletError as error:
                outcome = Refused("shard_unavailable", error.detail)
            settle(index, outcome)

        async def one_at_a_time(index: int) -> None:
            try:
                answers[index] = await self.submit(transfers[index])
            except WalletError as error:
                answers[index] = error

        try:
            outcomes = await (await self.rounds.applier.enqueue([transfers[index] for index in placed]))
            moved = [index for index, outcome in zip(placed, outcomes, strict=True) if isinstance(outcome, Reroute)]
            for index, outcome in zip(placed, outcomes, strict=True):
                if not isinstance(outcome, Reroute):
                    settle(index, outcome)
            await asyncio.gather(*(route_again(index) for index in moved), *(one_at_a_time(index) for index in later))
        finally:
            # Cancelled or failed half-way: no id of this call stays registered, and no
            # waiter on one is left hanging.
            inflight.abandon(
                mine,
                owner,
                lambda: WalletError(
                    "shard_unavailable",
                    "the batch call ended before this transfer's outcome was known; retry with the same transaction_id",
                ),
            )
        assert all(answer is not None for answer in answers), "every item has an answer"
        return [answer for answer in answers if answer is not None]
