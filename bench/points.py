"""What one measured point is, and the points run inside the benchmark's own process: the
engine, one transfer per call or many (the batch API), and the checks that follow each."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from bench.cpu import CpuMeter
from bench.workload import Workload
from coordinator.service.wallet import WalletService
from launchers.postgres import LocalCluster
from shard_router.topology import Topology
from shards import outbox as outbox_sql
from shards.pool import connect

INITIAL_BALANCE = 1_000_000  # minor units per account: transfers of 0.01 never run dry


@dataclass
class Point:
    name: str
    mode: str
    concurrency: int
    per_call: int
    transfers: int = 0
    failed: int = 0
    seconds: float = 0.0
    per_s: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    p999_ms: float = 0.0
    # CPU per successful transfer (bench/cpu.py): the coordinator's processes (for in-process
    # points that includes the benchmark's own clients; for REST, the engine with its HTTP and
    # relay processes) and all PostgreSQL servers.
    coordinator_cpu_us: float | None = None
    postgres_cpu_us: float | None = None
    conserved: bool | None = None  # balances summed to the deposits after the point
    outbox_lag_s: float | None = None  # the oldest event not yet in the ledger, at the end (with a relay)
    spans_exported: int | None = None  # with tracing on: spans the server sent to the OTLP sink

    def cpu(self, meter: CpuMeter) -> None:
        self.coordinator_cpu_us, self.postgres_cpu_us = meter.per_transfer_us(self.transfers)


@dataclass
class Results:
    settings: dict[str, object]
    pgbench_tps: float = 0.0
    # CPU of one SELECT 1 round trip here: (client µs, server µs), the floor under every statement.
    statement_cpu_us: tuple[float | None, float | None] = (None, None)
    # Statements and round trips in a row of one lone transfer, per mode (bench/round_trips.py).
    round_trips: dict[str, dict[str, int]] = field(default_factory=dict)
    # The relay copying the outboxes of every point before it into the ledger (its own step).
    relay: Point | None = None
    floor: Point | None = None  # bare batched 2PC (bench/floor.py)
    rest_floor: Point | None = None  # HTTP with no wallet work (bench/rest_floor.py)
    points: list[Point] = field(default_factory=list)
    conserved: bool = False
    notes: list[str] = field(default_factory=list)
    summary: dict[str, float | None] = field(default_factory=dict)


def percentile(sorted_values: list[float], fraction: float) -> float:
    if not sorted_values:
        return 0.0
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * fraction))]


async def engine_point(
    service: WalletService,
    workload: Workload,
    name: str,
    mode: str,
    concurrency: int,
    per_call: int,
    seconds: float,
    cluster: LocalCluster | None = None,
) -> Point:
    point = Point(name, mode, concurrency, per_call)
    meter = CpuMeter(cluster).start() if cluster is not None else None
    latencies: list[float] = []
    deadline = time.monotonic() + seconds

    async def client() -> None:
        while time.monotonic() < deadline:
            items = [workload.transfer(mode) for _ in range(per_call)]
            started = time.perf_counter()
            if per_call == 1:
                try:
                    result = await service.transfer(**items[0])
                    outcomes = [result.status == "success"]
                except Exception:
                    outcomes = [False]
            else:
                outcomes = [getattr(r, "status", None) == "success" for r in await service.transfer_many(items)]
            elapsed = time.perf_counter() - started
            latencies.extend([elapsed] * len(items))
            point.transfers += sum(outcomes)
            point.failed += len(outcomes) - sum(outcomes)

    started = time.monotonic()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    point.seconds = time.monotonic() - started
    if meter is not None:
        point.cpu(meter.stop())
    point.per_s = point.transfers / point.seconds
    latencies.sort()
    point.p50_ms, point.p99_ms, point.p999_ms = (percentile(latencies, f) * 1000 for f in (0.5, 0.99, 0.999))
    return point


async def conserved(service: WalletService, accounts: int) -> bool:
    """Every balance summed equals every deposit; nothing reserved; nothing left prepared."""
    await service.recover(abort_after_ms=0)
    balance, reserved, _ = await service.totals()
    return balance == accounts * INITIAL_BALANCE and reserved == 0


async def outbox_lag_s(topology: Topology) -> float:
    """The age of the oldest outbox row not yet relayed, over every shard (0 when none waits)."""

    async def one(dsn: str) -> int:
        connection = await connect(dsn)
        try:
            return (await outbox_sql.outbox_lag(connection))[1]
        finally:
            await connection.close()

    return max(await asyncio.gather(*(one(dsn) for dsn in topology.shards.values()))) / 1000
