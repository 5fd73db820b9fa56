"""What one lone transfer costs the shards in each protocol: statements, and round trips in a row.

A batch's fixed cost is its statements (each a parse, plan and reply on a shard, and a wake-up
of the coordinator's event loop) and the round trips on its critical path (each one a wait
for the slowest shard it asks). Small batches pay them for few transfers. This counts both,
for one transfer alone (no other load; recovery and the relay not running): every statement
the shards ran, timed through the pools' statement observer, and the round trips, by grouping
statements into waves: a wave begins with a statement that starts after every statement of the
wave before it has ended.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from coordinator.service.wallet import WalletService
from core.runtime.settings import Settings
from shard_router.topology import Topology

MODES = ("local", "2pc", "tcc", "saga")
WARM_UPS = 5


@dataclass
class Cost:
    statements: int
    round_trips: int


@dataclass
class Statement:
    started: float
    ended: float


def waves(statements: list[Statement]) -> int:
    """Round trips in a row: statements grouped by overlap in time."""
    count, wave_end = 0, float("-inf")
    for statement in sorted(statements, key=lambda s: s.started):
        if statement.started >= wave_end:
            count += 1
            wave_end = statement.ended
        else:
            wave_end = max(wave_end, statement.ended)
    return count


async def lone_transfer_costs(
    topology: Topology, settings: Settings, local: tuple[str, str], cross: tuple[str, str]
) -> dict[str, Cost]:
    """Per mode, one transfer of 0.01 USD between accounts that exist and hold money: `local`
    within one shard, `cross` across two."""
    seen: list[Statement] = []

    def observe(started: float, ended: float) -> None:
        seen.append(Statement(started, ended))

    costs: dict[str, Cost] = {}
    async with WalletService(topology, settings, statement_observer=observe) as service:
        for mode in MODES:
            source, target = local if mode == "local" else cross
            for _ in range(WARM_UPS):  # every pooled connection has prepared the statements once
                await service.transfer(
                    source, target, "0.01", "USD", str(uuid.uuid4()), "2pc" if mode == "local" else mode
                )
            seen.clear()
            await service.transfer(source, target, "0.01", "USD", str(uuid.uuid4()), "2pc" if mode == "local" else mode)
            costs[mode] = Cost(len(seen), waves(seen))
    return costs
