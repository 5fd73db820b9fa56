"""The fault schedule of a run: seeded, so a failing run can be replayed exactly.

Faults come one at a time: inject, hold, heal, then a gap in which the system works
normally. The first cycle always holds every kind and arms every fault point once
(each protocol step killed deterministically, not by luck); later cycles, in long
runs, are random picks.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from core.runtime.fault_points import FAULT_POINTS

COORDINATOR_KILL = "coordinator_kill"  # SIGKILL a coordinator, restart it after hold_s
FAULT_POINT = "fault_point"  # restart a coordinator armed at a named step; it dies there
SHARD_KILL = "shard_kill"  # crash a shard server (immediate stop), restart it after hold_s
SHARD_PAUSE = "shard_pause"  # SIGSTOP a shard past the timeouts, then SIGCONT
PROXY_DELAY = "proxy_delay"  # coordinator <-> shard latency for hold_s
PROXY_DROP = "proxy_drop"  # coordinator <-> shard packets lost for hold_s
PROXY_CUT = "proxy_cut"  # coordinator <-> shard connections reset, refused for hold_s
PRIMARY_KILL = "primary_kill"  # HA shards: SIGKILL the primary's postmaster; the standby takes over
STANDBY_KILL = "standby_kill"  # HA shards: SIGKILL the synchronous standby (Patroni and server), restart it
KINDS = (COORDINATOR_KILL, FAULT_POINT, SHARD_KILL, SHARD_PAUSE, PROXY_DELAY, PROXY_DROP, PROXY_CUT)
# On HA shards (`wallet chaos --ha`) a shard is never down as a whole: its members are killed
# one at a time instead of the server crashed or paused.
HA_KINDS = (COORDINATOR_KILL, FAULT_POINT, PRIMARY_KILL, STANDBY_KILL, PROXY_DELAY, PROXY_DROP, PROXY_CUT)
ALL_KINDS = KINDS + (PRIMARY_KILL, STANDBY_KILL)

# (shortest, longest) hold per kind, in seconds. A pause outlasts lock_timeout (5 s) and
# the pools' acquire timeout (5 s), so waiting sessions give up while the shard is stopped.
HOLD_S = {
    COORDINATOR_KILL: (0.5, 2.0),
    FAULT_POINT: (0.0, 0.0),  # held until the coordinator reaches the step and dies
    SHARD_KILL: (1.0, 4.0),
    SHARD_PAUSE: (6.0, 8.0),
    PRIMARY_KILL: (1.0, 3.0),  # then held until the cluster has a primary and a synchronous standby again
    STANDBY_KILL: (1.0, 4.0),
    PROXY_DELAY: (2.0, 5.0),
    PROXY_DROP: (2.0, 6.0),
    PROXY_CUT: (1.0, 3.0),
}
PROXY_DELAY_MS = (50, 400)
GAP_S = (1.0, 3.0)
FAULTS_PER_RUN_MAX = 10_000


@dataclass(frozen=True)
class Fault:
    kind: str
    target: str  # coordinator index, shard name, or the fault point's name
    hold_s: float
    gap_s: float  # normal operation after healing
    delay_ms: int = 0  # proxy_delay only
    coordinator: int = 0  # which coordinator a fault point is armed in

    def __post_init__(self) -> None:
        assert self.kind in ALL_KINDS, f"unknown fault kind {self.kind!r}"
        assert self.kind != FAULT_POINT or self.target in FAULT_POINTS, f"unknown fault point {self.target!r}"

    def describe(self) -> str:
        extra = f" {self.delay_ms} ms" if self.kind == PROXY_DELAY else ""
        return f"{self.kind} {self.target}{extra} hold {self.hold_s:.1f}s"


def build_schedule(
    seed: int,
    shards: list[str],
    proxied_shard: str,
    coordinators: int,
    fault_points: list[str],
    total_s: float | None = None,
    hold_scale: float = 1.0,
    kinds: tuple[str, ...] = KINDS,
) -> list[Fault]:
    """Every kind and every fault point once, shuffled; then, while the faults so far fit in
    `total_s` (None: stop after the first cycle), random faults."""
    assert coordinators >= 1, "a run has at least one coordinator"
    assert proxied_shard in shards, f"the proxied shard {proxied_shard!r} must be one of {shards}"
    rng = random.Random(seed)

    def one(kind: str, target: str | None = None) -> Fault:
        low, high = HOLD_S[kind]
        hold = round(rng.uniform(low, high) * (hold_scale if kind != SHARD_PAUSE else 1.0), 2)
        gap = round(rng.uniform(*GAP_S) * hold_scale, 2)
        coordinator = rng.randrange(coordinators)
        if kind == COORDINATOR_KILL:
            target = target or str(coordinator)
        elif kind in (SHARD_KILL, SHARD_PAUSE, PRIMARY_KILL, STANDBY_KILL):
            target = target or rng.choice(shards)
        elif kind in (PROXY_DELAY, PROXY_DROP, PROXY_CUT):
            target = proxied_shard
        assert target is not None
        delay_ms = rng.randint(*PROXY_DELAY_MS) if kind == PROXY_DELAY else 0
        if kind == COORDINATOR_KILL:
            coordinator = int(target)
        return Fault(kind, target, hold, gap, delay_ms, coordinator)

    first = [one(kind) for kind in kinds if kind != FAULT_POINT]
    first += [one(FAULT_POINT, point) for point in sorted(fault_points)]
    rng.shuffle(first)
    schedule = list(first)
    if total_s is None:
        return schedule
    every_point = sorted(fault_points)
    spent = sum(f.hold_s + f.gap_s + fault_overhead_s(f) for f in schedule)
    while spent < total_s and len(schedule) < FAULTS_PER_RUN_MAX:
        kind = rng.choice(kinds)
        fault = one(kind, rng.choice(every_point) if kind == FAULT_POINT else None)
        schedule.append(fault)
        spent += fault.hold_s + fault.gap_s + fault_overhead_s(fault)
    return schedule


def fault_overhead_s(fault: Fault) -> float:
    """A rough cost beyond the hold: restarts of processes and servers."""
    return {COORDINATOR_KILL: 1.0, FAULT_POINT: 3.0, SHARD_KILL: 1.5, PRIMARY_KILL: 8.0, STANDBY_KILL: 4.0}.get(
        fault.kind, 0.0
    )
