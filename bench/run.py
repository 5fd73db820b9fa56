"""`wallet bench`: throughput and latency of the transfer engine, with its baselines measured
in the same run on the same machine.

  1. Start a local cluster (4 shards + ledger, fsync and synchronous_commit on) in a fresh
     directory; create the accounts by COPY.
  2. Baseline A: pgbench's TPC-B-like script on one shard server.
  3. Baseline F, the floor: bare batched 2PC on tables of its own (bench/floor.py), at the batch
     API's batch size and calls in flight. Every point is also reported as a fraction of it.
  4. Statements and round trips in a row of one lone transfer per mode (bench/round_trips.py).
  5. Engine, in-process (the coordinator's whole path: validation, routing, rounds, protocol,
     outbox), one transfer per call, at several concurrencies: the chart.
  6. Batch API: many transfers per call, for 2PC, TC/C and Saga; then 2PC with hot accounts
     (Zipf 1.0 receivers; one merchant receiving 20% of all transfers).
  7. Baseline B: the same engine unbatched (batch size 1): one protocol run per transfer.
  8. The relay, on its own: every point's outbox into the ledger.
  9. Sustained: the batch API for 30 s (--sustained-seconds) with the relay as its own process;
     the outbox lag at the end (a run whose lag keeps growing is not sustained).
 10. REST: `wallet serve` as its own processes, driven by wrk over HTTP, one transfer per
     request, at several connection counts (tuned: the relay off, logs at WARNING); under
     exactly `make run`'s defaults (the relay on, logs at INFO), also sustained for 30 s; and
     the REST floor (bench/rest_floor.py): the same server and body, no wallet work.
     With --tracing and --rest-source, at 128 connections beside the tuned point: tracing on
     (every request traced, exported to a local OTLP receiver), another build's server, and
     the tuned server again (the spread of the two is the run-to-run noise). --only-rest
     measures pgbench and these REST points alone, in about a minute.
Conservation is checked after every point: every balance summed equals every deposit;
nothing reserved; nothing prepared.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

from bench import rest
from bench.accounts import account_ids, create_accounts
from bench.cpu import CpuMeter, statement_cost_us
from bench.floor import Floor, floor_point
from bench.points import INITIAL_BALANCE, Point, Results, conserved, engine_point, outbox_lag_s, percentile
from bench.report import (
    BATCH_POINT,
    ENGINE_POINT,
    HOT_WORKLOADS,
    SUSTAINED_BATCH_POINT,
    UNBATCHED_POINT,
    chart,
    report,
    summarize,
)
from bench.round_trips import lone_transfer_costs
from bench.tables import markdown
from bench.workload import Workload
from coordinator.service.wallet import WalletService
from core.runtime import event_loop
from core.runtime.settings import BatchLimits, Settings
from launchers.postgres import LocalCluster, temporary_home
from shards import migrate

SUSTAINED_S_DEFAULT = 30.0


def pgbench(cluster: LocalCluster, seconds: float, clients: int) -> float:
    server = cluster.server("shard0")
    binary = str(cluster.bin)
    common = ["-h", "127.0.0.1", "-p", str(server.port), "-U", "wallet"]
    subprocess.run([f"{binary}/createdb", *common, "pgbench"], capture_output=True)
    subprocess.run(
        [f"{binary}/pgbench", *common, "-i", "-q", "-s", str(max(clients, 1)), "pgbench"],
        check=True,
        capture_output=True,
    )
    completed = subprocess.run(
        [f"{binary}/pgbench", *common, "-n", "-c", str(clients), "-j", "2", "-T", str(max(1, int(seconds))), "pgbench"],
        check=True,
        capture_output=True,
        text=True,
    )
    match = re.search(r"tps = ([0-9.]+)", completed.stdout)
    assert match, completed.stdout
    return float(match.group(1))


class Bench:
    """One run's cluster, accounts, workload and results; a method per group of points."""

    def __init__(self, cluster: LocalCluster, args: argparse.Namespace, results: Results, workdir: Path) -> None:
        self.cluster = cluster
        self.topology = cluster.topology
        self.args = args
        self.results = results
        self.workdir = workdir
        self.ids = account_ids(args.accounts)
        self.workload = Workload(self.topology, self.ids, args.cross, args.zipf, args.seed)
        self.settings = Settings(home=cluster.home, topology_path=cluster.topology_path, pool_size_max=16)

    async def check(self, point: Point | None) -> None:
        """Conservation after `point`, recorded on it; then reported."""
        if point is None:
            return
        async with WalletService(self.topology, self.settings) as service:
            point.conserved = await conserved(service, len(self.ids))
        report(point, self.results)

    async def measure(self) -> None:
        await create_accounts(self.topology, self.ids, INITIAL_BALANCE)
        self.results.statement_cpu_us = await statement_cost_us(self.cluster, self.topology.shards["shard0"])
        if not self.args.only_rest:
            await self.floor()
            await self.round_trips()
            await self.engine()
            await self.relay()
            await self.sustained()
            await self.relay(report_it=False)  # what the sustained point left behind, before REST
        if self.args.rest or self.args.only_rest:
            await self.rest_points()
        async with WalletService(self.topology, self.settings) as service:
            self.results.conserved = await conserved(service, len(self.ids)) and all(
                point.conserved is not False for point in self.results.points
            )

    async def floor(self) -> None:
        args, results = self.args, self.results
        async with Floor(self.topology, self.ids, INITIAL_BALANCE) as floor:
            meter = CpuMeter(self.cluster).start()
            applied, seconds, latencies = await floor_point(
                floor, self.workload, args.batch, args.batch_clients, args.seconds
            )
            results.floor = Point(
                "floor: bare batched 2PC",
                "2pc",
                args.batch_clients,
                args.batch,
                transfers=applied,
                seconds=seconds,
                per_s=applied / seconds,
            )
            results.floor.cpu(meter.stop())
            latencies.sort()
            results.floor.p50_ms, results.floor.p99_ms, results.floor.p999_ms = (
                percentile(latencies, f) * 1000 for f in (0.5, 0.99, 0.999)
            )
            results.floor.conserved = await floor.total() == len(self.ids) * INITIAL_BALANCE
            if floor.retries:
                results.notes.append(f"the floor retried {floor.retries} batches after lock waits")
            report(results.floor, results)

    async def round_trips(self) -> None:
        by_shard = self.workload.by_shard
        local = (by_shard["shard0"][0], by_shard["shard0"][1])
        cross = (by_shard["shard0"][2], by_shard["shard1"][0])
        costs = await lone_transfer_costs(self.topology, self.settings, local, cross)
        self.results.round_trips = {mode: asdict(cost) for mode, cost in costs.items()}
        for mode, cost in costs.items():
            print(
                f"  one lone {mode:<5} transfer: {cost.statements} statements, {cost.round_trips} round trips in a row",
                flush=True,
            )

    async def engine(self) -> None:
        args, results, cluster = self.args, self.results, self.cluster
        unbatched = replace(self.settings, limits=BatchLimits(batch_size_max=1, workers=16))
        async with WalletService(self.topology, self.settings) as service:
            for concurrency in args.concurrency:
                results.points.append(
                    await engine_point(
                        service, self.workload, ENGINE_POINT, "2pc", concurrency, 1, args.seconds, cluster
                    )
                )
                await self.check(results.points[-1])
            for mode in args.modes:
                results.points.append(
                    await engine_point(
                        service, self.workload, BATCH_POINT, mode, args.batch_clients, args.batch, args.seconds, cluster
                    )
                )
                await self.check(results.points[-1])
            for name, zipf_s, merchant_fraction in HOT_WORKLOADS:
                hot = Workload(self.topology, self.ids, args.cross, zipf_s, args.seed, merchant_fraction)
                results.points.append(
                    await engine_point(service, hot, name, "2pc", args.batch_clients, args.batch, args.seconds, cluster)
                )
                await self.check(results.points[-1])
        async with WalletService(self.topology, unbatched) as service:
            for concurrency in args.concurrency:
                results.points.append(
                    await engine_point(
                        service, self.workload, UNBATCHED_POINT, "2pc", concurrency, 1, args.seconds, cluster
                    )
                )
                await self.check(results.points[-1])

    async def relay(self, report_it: bool = True) -> None:
        """Every outbox row so far into the ledger, as a relay does (its CPU per event)."""
        async with WalletService(self.topology, self.settings) as service:
            assert service.ledger is not None
            meter, started = CpuMeter(self.cluster).start(), time.monotonic()
            relay = Point("relay, outbox to ledger (events)", "-", 1, 1, transfers=await service.ledger.drain())
            relay.seconds = time.monotonic() - started
            relay.per_s = relay.transfers / relay.seconds if relay.seconds else 0.0
            relay.cpu(meter.stop())
        if report_it:
            self.results.relay = relay
            print(
                f"  {relay.name:<44} {relay.transfers:,} events in {relay.seconds:.1f} s"
                f"{' ' + str(round(relay.per_s)) + '/s' if relay.seconds else ''}",
                flush=True,
            )

    async def sustained(self) -> None:
        """The batch API for --sustained-seconds with a relay process beside it (its CPU is
        counted as the coordinator's: it runs under this process)."""
        environment = {
            **os.environ,
            "WALLET_HOME": str(self.cluster.home),
            "WALLET_TOPOLOGY": str(self.cluster.topology_path),
            "WALLET_LOG_LEVEL": "warning",
        }
        relay = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "coordinator.cli.main", "ledger", "relay", "--follow", env=environment
        )
        try:
            async with WalletService(self.topology, self.settings) as service:
                point = await engine_point(
                    service,
                    self.workload,
                    SUSTAINED_BATCH_POINT,
                    "2pc",
                    self.args.batch_clients,
                    self.args.batch,
                    self.args.sustained_seconds,
                    self.cluster,
                )
            point.outbox_lag_s = await outbox_lag_s(self.topology)
        finally:
            relay.send_signal(signal.SIGTERM)
            await relay.wait()
        self.results.points.append(point)
        await self.check(point)

    async def rest_points(self) -> None:
        args, results = self.args, self.results

        def run(connections: int, server: rest.Server, seconds: float) -> Point | None:
            return rest.rest_point(self.cluster, self.workload, "2pc", connections, seconds, self.workdir, server)

        for connections in args.rest_connections:
            point = await asyncio.to_thread(run, connections, rest.TUNED, args.seconds)
            if point is None:
                results.notes.append("REST points skipped: wrk is not installed (apt-get install wrk)")
                return
            results.points.append(point)
            await self.check(point)
        await self.comparison_points(run)
        if args.only_rest:
            return
        for server, seconds in ((rest.DEFAULTS, args.seconds), (rest.SUSTAINED, args.sustained_seconds)):
            # the relay of these points starts from an empty outbox, not from the tuned points' backlog
            await self.relay(report_it=False)
            point = await asyncio.to_thread(run, 128, server, seconds)
            if point is not None:
                results.points.append(point)
                await self.check(point)
        await self.relay(report_it=False)
        results.rest_floor = await asyncio.to_thread(run, 128, rest.FLOOR, args.seconds)
        if results.rest_floor is not None:
            report(results.rest_floor, results)

    async def comparison_points(self, run: Callable[[int, rest.Server, float], Point | None]) -> None:
        """Tracing on, another build, then the tuned server again, at 128 connections, each from
        an empty outbox (the tuned server runs no relay)."""
        ratios = [1.0] if self.args.tracing == [] else self.args.tracing or []  # `--tracing` alone: every request
        servers = [rest.traced(ratio) for ratio in ratios]
        servers += [rest.other_build(self.args.rest_source)] if self.args.rest_source else []
        for server in [*servers, rest.AGAIN] if servers else []:
            await self.relay(report_it=False)
            point = await asyncio.to_thread(run, 128, server, self.args.seconds)
            if point is not None:
                self.results.points.append(point)
                await self.check(point)


def sample_ratio(text: str) -> float:
    try:
        ratio = float(text)
    except ValueError:
        ratio = -1.0
    if not 0.0 <= ratio <= 1.0:
        raise argparse.ArgumentTypeError(f"a share of requests in 0..1, got {text!r}")
    return ratio


def existing_directory(text: str) -> Path:
    if not Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"{text} is not a directory (a checkout, e.g. from `git archive main`)")
    return Path(text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wallet bench",
        description=__doc__,
        epilog="Other benchmarks: `wallet bench ledger` (the ledger's replay and relay) "
        "and `wallet bench failover` (primaries killed under load), each with "
        "--help.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--accounts", type=int, default=100_000)
    parser.add_argument("--cross", type=float, default=0.75, help="fraction of cross-shard transfers (default 0.75)")
    parser.add_argument("--zipf", type=float, default=0.0, help="Zipf exponent for receivers; 0 = uniform")
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of each measured point")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[16, 64, 256, 1024])
    parser.add_argument("--batch", type=int, default=1000, help="transfers per batch-API call")
    parser.add_argument("--batch-clients", type=int, default=8, help="batch-API calls in flight")
    parser.add_argument("--modes", nargs="+", default=["2pc", "tcc", "saga"])
    parser.add_argument("--rest", action=argparse.BooleanOptionalAction, default=True, help="measure REST with wrk")
    parser.add_argument(
        "--rest-connections",
        type=int,
        nargs="+",
        default=[16, 128, 1024],
        help="wrk connections of the REST curve (default 16 128 1024)",
    )
    parser.add_argument(
        "--tracing",
        type=sample_ratio,
        nargs="*",
        metavar="RATIO",
        help="also measure REST with tracing on, exported over OTLP to a local receiver: every request "
        "traced, or a point per share of requests sampled (--tracing 1 0.1)",
    )
    parser.add_argument(
        "--rest-source",
        type=existing_directory,
        help="also measure REST served by the code in this directory (another build, e.g. `git archive main`)",
    )
    parser.add_argument(
        "--only-rest",
        action="store_true",
        help="measure pgbench and the REST points only (with --tracing, --rest-source: a change's cost in a minute)",
    )
    parser.add_argument(
        "--sustained-seconds",
        type=float,
        default=SUSTAINED_S_DEFAULT,
        help="duration of the sustained points, with the relay running (default 30)",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("bench/results"), help="where results.json and chart.png go")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    assert args.accounts >= 100, "--accounts must be at least 100"
    home = temporary_home("bench")
    cluster = LocalCluster(home, shard_count=4)
    results = Results(settings={k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()})
    try:
        topology = cluster.start()
        assert topology.ledgers
        migrate.upgrade_all(topology)
        print(f"cluster up in {home}; pgbench baseline ...", flush=True)
        results.pgbench_tps = pgbench(cluster, args.seconds, clients=16)
        print(f"  pgbench TPC-B 16 clients: {results.pgbench_tps:,.0f} tps", flush=True)
        event_loop.run(Bench(cluster, args, results, home).measure())
    finally:
        cluster.stop()
        shutil.rmtree(home, ignore_errors=True)
    summarize(results, 128 if 128 in args.rest_connections else args.rest_connections[0])
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps({**asdict(results)}, indent=2) + "\n")
    (args.out / "results.md").write_text(markdown(results))
    drawn = chart(results, args.out / "chart.png")
    print(
        f"results: {args.out / 'results.json'} and results.md"
        + (f", chart: {args.out / 'chart.png'}" if drawn else " (no chart: pip install matplotlib)")
    )
    return 0 if results.conserved else 1


if __name__ == "__main__":
    sys.exit(main())
