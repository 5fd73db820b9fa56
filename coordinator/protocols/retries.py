"""The one retry policy for a local step that a conflict rolled back: bounded, jittered,
and only on errors that are safe to retry from scratch (ShardRetryable)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_random_exponential

from shards.errors import ShardRetryable

RETRY_ATTEMPTS_MAX = 5
Result = TypeVar("Result")


async def retry_conflicts(action: Callable[[], Awaitable[Result]], wait_max_s: float = 0.2) -> Result:
    async for attempt in AsyncRetrying(
        stop=stop_after_attempt(RETRY_ATTEMPTS_MAX),
        wait=wait_random_exponential(multiplier=0.005, max=wait_max_s),
        retry=retry_if_exception_type(ShardRetryable),
        reraise=True,
    ):
        with attempt:
            return await action()
    raise AssertionError("unreachable: tenacity reraises the last error")
