"""Rate limiting per token: a token bucket each, refilled continuously."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from core.domain.errors import WalletError

# Buckets kept at once; the least recently used is dropped first (it refills to full anyway).
BUCKETS_MAX = 100_000


class RateLimited(WalletError):
    def __init__(self, retry_after_s: float) -> None:
        super().__init__("rate_limited", f"too many requests for this token; retry in {retry_after_s:.2f} s")
        self.retry_after_s = retry_after_s


@dataclass
class Bucket:
    tokens: float
    updated_s: float


class RateLimiter:
    def __init__(self, rate_per_s: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        assert rate_per_s > 0 and burst >= 1, "a rate limit needs rate_per_s > 0 and burst >= 1"
        self.rate_per_s = rate_per_s
        self.burst = burst
        self.clock = clock
        self.buckets: dict[str, Bucket] = {}

    def take(self, key: str, cost: float = 1.0) -> None:
        """Spend `cost` from `key`'s bucket, or raise RateLimited saying when it would be there."""
        now = self.clock()
        bucket = self.buckets.pop(key, None)  # re-inserted below: most recent last
        if bucket is None:
            if len(self.buckets) >= BUCKETS_MAX:
                self.buckets.pop(next(iter(self.buckets)))
            bucket = Bucket(float(self.burst), now)
        bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.updated_s) * self.rate_per_s)
        bucket.updated_s = now
        self.buckets[key] = bucket
        if bucket.tokens < cost:
            raise RateLimited(math.ceil((cost - bucket.tokens) / self.rate_per_s * 100) / 100)
        bucket.tokens -= cost
