"""Run one step on many shards at once; collect each shard's result or its error.

Every "ask every shard" of the coordinator goes through here (lookups, recovery, slot
moves, the TC/C and Saga steps, probes, metrics, the relay), so one slow or dead shard
costs its own answer and never the others'. A cancellation is not an answer: it goes on
up at once.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Awaitable, Callable, Hashable, Iterable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

Key = TypeVar("Key", bound=Hashable)
Result = TypeVar("Result")
Item = TypeVar("Item")


@dataclass
class FanOut(Generic[Key, Result]):
    """Per key, in the order asked: its result, or the Exception its step raised."""

    results: dict[Key, Result] = field(default_factory=dict)
    errors: dict[Key, Exception] = field(default_factory=dict)

    def raise_first(self) -> None:
        """Every step answered, or the first failure (in the order asked) is raised."""
        for error in self.errors.values():
            raise error


async def fan_out(keys: Iterable[Key], step: Callable[[Key], Awaitable[Result]]) -> FanOut[Key, Result]:
    """`step(key)` for every key at once."""
    asked = list(keys)
    answers = await asyncio.gather(*(step(key) for key in asked), return_exceptions=True)
    collected: FanOut[Key, Result] = FanOut()
    for key, answer in zip(asked, answers, strict=True):
        if isinstance(answer, Exception):
            collected.errors[key] = answer
        elif isinstance(answer, BaseException):
            raise answer  # cancelled or exiting: not a shard's answer
        else:
            collected.results[key] = answer
    return collected


async def fan_out_groups(
    items: Iterable[Item],
    key_of: Callable[[Item], Key],
    step: Callable[[Key, list[Item]], Awaitable[list[Result]]],
) -> tuple[list[tuple[Item, Result]], dict[Key, tuple[list[Item], Exception]]]:
    """Group items by key (a shard), run `step` once per group, all groups at once. Returns
    the (item, answer) pairs of the groups that answered, one answer per item, and per
    failed group its items and its error."""
    groups: dict[Key, list[Item]] = defaultdict(list)
    for item in items:
        groups[key_of(item)].append(item)
    collected = await fan_out(groups, lambda key: step(key, groups[key]))
    paired: list[tuple[Item, Result]] = []
    for key, answers in collected.results.items():
        assert len(answers) == len(groups[key]), "a group step answers once per item, in order"
        paired.extend(zip(groups[key], answers, strict=True))
    return paired, {key: (groups[key], error) for key, error in collected.errors.items()}


async def settled(future: asyncio.Future[Result]) -> None:
    """A step started beside another (a read beside a transaction) is over when that one is:
    cancelled if still running (the other failed first), its error retrieved either way."""
    if not future.done():
        future.cancel()
    await asyncio.gather(future, return_exceptions=True)
