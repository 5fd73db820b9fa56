"""The transfer workload: who pays whom, how often across shards, how skewed."""

from __future__ import annotations

import bisect
import itertools
import random
import uuid

from shard_router.topology import Topology


class Workload:
    """Draws (from, to) pairs: `cross_fraction` of them on different shards; with `zipf_s` > 0,
    receivers follow a Zipf law (a few hot merchants receive most)."""

    def __init__(
        self,
        topology: Topology,
        ids: list[str],
        cross_fraction: float,
        zipf_s: float,
        seed: int,
        merchant_fraction: float = 0.0,
    ) -> None:
        """`merchant_fraction`: that share of all transfers pays one account (a hot merchant)."""
        assert 0 <= cross_fraction <= 1, "cross_fraction is 0..1"
        assert zipf_s >= 0, "zipf_s is >= 0"
        assert 0 <= merchant_fraction < 1, "merchant_fraction is 0..1"
        self.merchant_fraction = merchant_fraction
        self.rng = random.Random(seed)
        # Transaction ids: random version-4 UUIDs from a generator seeded once from the OS (a
        # syscall per id, as uuid.uuid4() makes, was a tenth of the benchmark's own CPU).
        self.ids_rng = random.Random(uuid.uuid4().int)
        self.topology = topology
        self.ids = ids
        self.cross_fraction = cross_fraction
        self.by_shard: dict[str, list[str]] = {}
        for account_id in ids:
            self.by_shard.setdefault(topology.shard_of(account_id), []).append(account_id)
        self.shards = sorted(self.by_shard)
        self.shard_of = {a: topology.shard_of(a) for a in ids}
        self.cumulative: list[float] | None = None
        if zipf_s > 0:
            weights = [1 / (rank**zipf_s) for rank in range(1, len(ids) + 1)]
            self.cumulative = list(itertools.accumulate(weights))

    def receiver(self) -> str:
        if self.merchant_fraction and self.rng.random() < self.merchant_fraction:
            return self.ids[0]
        if self.cumulative is None:
            return self.rng.choice(self.ids)
        point = self.rng.random() * self.cumulative[-1]
        return self.ids[bisect.bisect_left(self.cumulative, point)]

    def pair(self) -> tuple[str, str]:
        cross = self.rng.random() < self.cross_fraction and len(self.shards) > 1
        for _ in range(100):
            target = self.receiver()
            if cross:
                source = self.rng.choice(self.ids)
                if self.shard_of[source] != self.shard_of[target]:
                    return source, target
            else:
                source = self.rng.choice(self.by_shard[self.shard_of[target]])
                if source != target:
                    return source, target
        raise RuntimeError("could not draw a transfer pair: too few accounts per shard")

    def transfer(self, mode: str) -> dict[str, str]:
        source, target = self.pair()
        return {
            "from_account": source,
            "to_account": target,
            "amount": "0.01",
            "currency": "USD",
            "transaction_id": self.transaction_id(),
            "mode": mode,
        }

    def transaction_id(self) -> str:
        bits = self.ids_rng.getrandbits(128) & ~(0xF000 << 64) & ~(0xC000 << 48) | (0x4000 << 64) | (0x8000 << 48)
        text = f"{bits:032x}"
        return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"
