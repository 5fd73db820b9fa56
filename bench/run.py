"""`wallet bench`: throughput and latency of the transfer engine, with its baselines measured
in the same run on the same machine.

  1. Start a local cluster (4 shards + ledger, fsync and synchronous_commit on) in a fresh
     directory; create the accounts by COPY.
  2. Baseline A: pgbench's TPC-B-like script on one shard server.
  3. Baseline F, the floor: bare batched 2PC on tables of its own (bench/floor.py), at the batch
     API's batch size and calls in flight. Every point is also reported as a fraction of it.
  4. Engine, in-process (the coordinator's whole path: validation, routing, group commit,
     protocol, outbox), one transfer per call, at several concurrencies: the chart.
  5. Batch API: many transfers per call, for 2PC, TC/C and Saga; then 2PC with hot accounts
     (Zipf 1.0 receivers; one merchant receiving 20% of all transfers).
  6. Baseline B: the same engine unbatched (batch size 1): one protocol run per transfer.
  7. REST: `wallet serve` as its own process, driven by wrk over HTTP, one transfer per request;
     and the REST floor (bench/rest_floor.py): the same server and body, no wallet work.
  8. Conservation: every balance summed equals every deposit; nothing reserved; nothing prepared.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench.accounts import account_ids, create_accounts
from bench.cpu import CpuMeter, statement_cost_us
from bench.floor import Floor, floor_point
from bench.workload import Workload
from coordinator.runtime import event_loop
from coordinator.runtime.settings import Settings
from coordinator.runtime.settings import BatchLimits
from coordinator.service.wallet import WalletService
from wallet_client import WalletClient
from shards import migrate
from launchers.postgres import LocalCluster, free_port, temporary_home

INITIAL_BALANCE = 1_000_000  # minor units per account: transfers of 0.01 never run dry
# The batch API with hot accounts: (point name, the workload's skew)
ZIPF_POINT, MERCHANT_POINT = "batch API, Zipf 1.0 receivers", "batch API, one merchant receives 20%"
HOT_WORKLOADS = ((ZIPF_POINT, 1.0, 0.0), (MERCHANT_POINT, 0.0, 0.2))  # (name, Zipf exponent, merchant's share)
TARGET_TRANSFERS_PER_S = 1_000_000


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
    # CPU per successful transfer (bench/cpu.py): the coordinator's process (for in-process
    # points that includes the benchmark's own clients) and all PostgreSQL servers.
    coordinator_cpu_us: float | None = None
    postgres_cpu_us: float | None = None

    def cpu(self, meter: CpuMeter) -> None:
        self.coordinator_cpu_us, self.postgres_cpu_us = meter.per_transfer_us(self.transfers)


@dataclass
class Results:
    settings: dict[str, object]
    pgbench_tps: float = 0.0
    # CPU of one SELECT 1 round trip here: (client µs, server µs), the floor under every statement.
    statement_cpu_us: tuple[float | None, float | None] = (None, None)
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


async def engine_point(service: WalletService, workload: Workload, name: str, mode: str, concurrency: int,
                       per_call: int, seconds: float, cluster: LocalCluster | None = None) -> Point:
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


def pgbench(cluster: LocalCluster, seconds: float, clients: int) -> float:
    server = cluster.server("shard0")
    binary = str(cluster.bin)
    common = ["-h", "127.0.0.1", "-p", str(server.port), "-U", "wallet"]
    subprocess.run([f"{binary}/createdb", *common, "pgbench"], capture_output=True)
    subprocess.run([f"{binary}/pgbench", *common, "-i", "-q", "-s", str(max(clients, 1)), "pgbench"],
                   check=True, capture_output=True)
    completed = subprocess.run(
        [f"{binary}/pgbench", *common, "-n", "-c", str(clients), "-j", "2", "-T", str(max(1, int(seconds))), "pgbench"],
        check=True, capture_output=True, text=True)
    match = re.search(r"tps = ([0-9.]+)", completed.stdout)
    assert match, completed.stdout
    return float(match.group(1))


WRK_SCRIPT = """
local pairs = {%(pairs)s}
local counter = 0
local thread_seed = 0
function setup(thread)
  thread_seed = thread_seed + 1
  thread:set("seed", thread_seed)
end
function init(args)
  math.randomseed(os.time() * 1000 + seed)
end
local function uuid()
  local template = "xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx"
  return (string.gsub(template, "[xy]", function(c)
    local v = (c == "x") and math.random(0, 15) or math.random(8, 11)
    return string.format("%%x", v)
  end))
end
request = function()
  counter = counter + 1
  local pair = pairs[(counter %% #pairs) + 1]
  local body = '{"from_account":"' .. pair[1] .. '","to_account":"' .. pair[2] ..
    '","amount":"0.01","currency":"USD","transaction_id":"' .. uuid() .. '","mode":"%(mode)s"}'
  return wrk.format("POST", "/v1/wallet/balance_transfer",
    {["Content-Type"] = "application/json", ["Authorization"] = "Bearer %(token)s"}, body)
end
done = function(summary, latency, requests)
  io.write(string.format("RESULT %%d %%d %%d %%f %%f %%f\\n", summary.requests,
    summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.duration, latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency:percentile(99.9) / 1000))
end
"""


def rest_point(cluster: LocalCluster, workload: Workload, mode: str, connections: int, seconds: float,
               workdir: Path, floor: bool = False) -> Point | None:
    """`wallet serve` (or, with `floor`, bench/rest_floor.py's bare handler) as its own process,
    driven by wrk, one transfer per request."""
    if shutil.which("wrk") is None:
        return None
    from coordinator.api.auth import issue_token, load_secret
    from coordinator.runtime.settings import Settings

    port = free_port()
    # An admin token (its own, higher rate limit); per-transfer logs off: they would cost the point;
    # the relay runs as its own process (as in docker/), measured on its own before this point.
    secret = load_secret(Settings(home=cluster.home, topology_path=cluster.topology_path), create=True)
    token = issue_token(secret or "", "bench", "admin")
    environment = {**os.environ, "WALLET_HOME": str(cluster.home), "WALLET_PORT": str(port),
                   "WALLET_LOG_LEVEL": "warning", "WALLET_RELAY": "off"}
    environment.pop("WALLET_AUTH_SECRET", None)
    command = [sys.executable, "-m", "bench.rest_floor", str(port)] if floor else \
        [sys.executable, "-m", "coordinator.cli.main", "serve"]
    server = subprocess.Popen(command, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        asyncio.run(ready(f"http://127.0.0.1:{port}", token))  # the API's own client says when it serves
        pairs = ",".join(f'{{"{a}","{b}"}}' for a, b in (workload.pair() for _ in range(20_000)))
        script = workdir / "transfer.lua"
        script.write_text(WRK_SCRIPT % {"pairs": pairs, "mode": mode, "token": token})
        meter = CpuMeter(cluster, server.pid).start()
        completed = subprocess.run(
            ["wrk", "-t", "2", "-c", str(connections), "-d", f"{max(1, int(seconds))}s", "--timeout", "10s",
             "-s", str(script), f"http://127.0.0.1:{port}"], capture_output=True, text=True, timeout=seconds + 120)
        match = re.search(r"RESULT (\d+) (\d+) (\d+) ([0-9.]+) ([0-9.]+) ([0-9.]+)", completed.stdout)
        assert match, completed.stdout + completed.stderr
        requests, errors, duration_us = int(match.group(1)), int(match.group(2)), int(match.group(3))
        name = "REST floor, bare handler (wrk)" if floor else "REST, one transfer per request (wrk)"
        point = Point(name, mode, connections, 1)
        point.transfers, point.failed, point.seconds = requests - errors, errors, duration_us / 1e6
        point.cpu(meter.stop())
        point.per_s = point.transfers / point.seconds
        point.p50_ms, point.p99_ms, point.p999_ms = (float(match.group(i)) for i in (4, 5, 6))
        return point
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()


async def ready(url: str, token: str) -> None:
    async with WalletClient(url, token=token) as client:
        await client.wait_ready(timeout_s=60)


async def conserved(service: WalletService, accounts: int) -> bool:
    await service.recover(abort_after_ms=0)
    balance, reserved, _ = await service.totals()
    return balance == accounts * INITIAL_BALANCE and reserved == 0


def chart(results: Results, path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    figure, throughput_axis = plt.subplots(figsize=(8, 4.5))
    latency_axis = throughput_axis.twinx()
    for name, colour in (("engine, one transfer per call", "tab:blue"), ("unbatched, one transfer per call", "tab:gray")):
        series = sorted((p for p in results.points if p.name == name), key=lambda p: p.concurrency)
        if not series:
            continue
        xs = [p.concurrency for p in series]
        throughput_axis.plot(xs, [p.per_s for p in series], "o-", color=colour, label=f"{name}: transfers/s")
        latency_axis.plot(xs, [p.p99_ms for p in series], "s--", color=colour, alpha=0.6, label=f"{name}: p99 ms")
    throughput_axis.set_xscale("log", base=2)
    throughput_axis.set_xlabel("concurrent clients")
    throughput_axis.set_ylabel("transfers/s")
    latency_axis.set_ylabel("p99 latency (ms)")
    throughput_axis.set_title(f"2PC, {int(float(str(results.settings['cross'])) * 100)}% cross-shard, "
                              f"{results.settings['accounts']} accounts, fsync on")
    handles = throughput_axis.get_legend_handles_labels()[0] + latency_axis.get_legend_handles_labels()[0]
    labels = throughput_axis.get_legend_handles_labels()[1] + latency_axis.get_legend_handles_labels()[1]
    throughput_axis.legend(handles, labels, fontsize=7, loc="upper left")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True


async def measure(cluster: LocalCluster, args: argparse.Namespace, results: Results, workdir: Path) -> None:
    topology = cluster.topology
    ids = account_ids(args.accounts)
    await create_accounts(topology, ids, INITIAL_BALANCE)
    workload = Workload(topology, ids, args.cross, args.zipf, args.seed)
    results.statement_cpu_us = await statement_cost_us(cluster, topology.shards["shard0"])
    async with Floor(topology, ids, INITIAL_BALANCE) as floor:
        meter = CpuMeter(cluster).start()
        applied, seconds, latencies = await floor_point(floor, workload, args.batch, args.batch_clients, args.seconds)
        results.floor = Point("floor: bare batched 2PC", "2pc", args.batch_clients, args.batch, transfers=applied,
                              seconds=seconds, per_s=applied / seconds)
        results.floor.cpu(meter.stop())
        latencies.sort()
        results.floor.p50_ms, results.floor.p99_ms, results.floor.p999_ms = (
            percentile(latencies, f) * 1000 for f in (0.5, 0.99, 0.999))
        if await floor.total() != len(ids) * INITIAL_BALANCE:
            results.notes.append("the floor did not conserve its own money")
        if floor.retries:
            results.notes.append(f"the floor retried {floor.retries} batches after lock waits")
        report(results.floor, results)
    batched = Settings(home=cluster.home, topology_path=cluster.topology_path, pool_size_max=16)
    unbatched = Settings(home=cluster.home, topology_path=cluster.topology_path, pool_size_max=16,
                         limits=BatchLimits(batch_size_max=1, workers=16))
    async with WalletService(topology, batched) as service:
        for concurrency in args.concurrency:
            results.points.append(await engine_point(service, workload, "engine, one transfer per call", "2pc",
                                                     concurrency, 1, args.seconds, cluster))
            report(results.points[-1], results)
        for mode in args.modes:
            results.points.append(await engine_point(service, workload, "batch API (in-process)", mode,
                                                     args.batch_clients, args.batch, args.seconds, cluster))
            report(results.points[-1], results)
        for name, zipf_s, merchant_fraction in HOT_WORKLOADS:
            hot = Workload(topology, ids, args.cross, zipf_s, args.seed, merchant_fraction)
            results.points.append(await engine_point(service, hot, name, "2pc", args.batch_clients, args.batch,
                                                     args.seconds, cluster))
            report(results.points[-1], results)
    async with WalletService(topology, unbatched) as service:
        for concurrency in args.concurrency:
            results.points.append(await engine_point(service, workload, "unbatched, one transfer per call", "2pc",
                                                     concurrency, 1, args.seconds, cluster))
            report(results.points[-1], results)
    async with WalletService(topology, batched) as service:  # a serving process starts with no backlog
        assert service.ledger is not None
        meter, started = CpuMeter(cluster).start(), time.monotonic()
        relay = Point("relay, outbox to ledger (events)", "-", 1, 1, transfers=await service.ledger.drain())
        relay.seconds = time.monotonic() - started
        relay.per_s = relay.transfers / relay.seconds if relay.seconds else 0.0
        relay.cpu(meter.stop())
        results.relay = relay
        print(f"  {relay.name:<40} {relay.transfers:,} events in {relay.seconds:.1f} s{cpu_text(relay, 'event')}", flush=True)
    if args.rest:
        point = await asyncio.to_thread(rest_point, cluster, workload, "2pc", args.rest_connections, args.seconds, workdir)
        if point is None:
            results.notes.append("REST points skipped: wrk is not installed (apt-get install wrk)")
        else:
            results.points.append(point)
            results.rest_floor = await asyncio.to_thread(rest_point, cluster, workload, "2pc", args.rest_connections,
                                                         args.seconds, workdir, True)
            report(point, results)
            if results.rest_floor is not None:
                report(results.rest_floor, results)
    async with WalletService(topology, batched) as service:
        results.conserved = await conserved(service, len(ids))


def report(point: Point, results: Results | None = None) -> None:
    floor = results.floor if results is not None else None
    share = f" ({point.per_s / floor.per_s:4.0%} of the floor)" if floor and floor.per_s and point is not floor else ""
    print(f"  {point.name:<40} {point.mode:<5} clients {point.concurrency:>5} x{point.per_call:<5} "
          f"{point.per_s:>10,.0f}/s{share}  p50 {point.p50_ms:7.1f} ms  p99 {point.p99_ms:7.1f} ms  "
          f"p999 {point.p999_ms:7.1f} ms  failed {point.failed}{cpu_text(point)}", flush=True)


def cpu_text(point: Point, unit: str = "transfer") -> str:
    if point.coordinator_cpu_us is None or point.postgres_cpu_us is None:
        return ""
    return f"  cpu/{unit}: coordinator {point.coordinator_cpu_us:,.0f} us, postgres {point.postgres_cpu_us:,.0f} us"


def best(results: Results, name: str, mode: str = "2pc", concurrency: int | None = None) -> Point | None:
    found = [p for p in results.points if p.name == name and p.mode == mode
             and (concurrency is None or p.concurrency == concurrency)]
    return max(found, key=lambda p: p.per_s) if found else None


REST_POINT = "REST, one transfer per request (wrk)"


def summary_of(results: Results) -> dict[str, float | None]:
    """The figures every run reports, by name (None: the point was not measured)."""
    def rate(point: Point | None) -> float | None:
        return round(point.per_s, 1) if point is not None else None

    batch, rest = best(results, "batch API (in-process)"), best(results, REST_POINT)
    return {
        "pgbench_tps": round(results.pgbench_tps, 1),
        "floor_tps": rate(results.floor),
        "batch_2pc_tps": rate(batch),
        "batch_tcc_tps": rate(best(results, "batch API (in-process)", "tcc")),
        "batch_saga_tps": rate(best(results, "batch API (in-process)", "saga")),
        "engine_1024_tps": rate(best(results, "engine, one transfer per call", concurrency=1024)),
        "rest_tps": rate(rest),
        "rest_p99_ms": round(rest.p99_ms, 1) if rest is not None else None,
        "rest_floor_tps": rate(results.rest_floor),
        "zipf_2pc_tps": rate(best(results, ZIPF_POINT)),
        "merchant_2pc_tps": rate(best(results, MERCHANT_POINT)),
        "batch_2pc_coordinator_cpu_us": batch.coordinator_cpu_us if batch is not None else None,
        "batch_2pc_postgres_cpu_us": batch.postgres_cpu_us if batch is not None else None,
    }


def summarize(results: Results) -> None:
    engine = best(results, "engine, one transfer per call")
    unbatched = best(results, "unbatched, one transfer per call")
    batch = best(results, "batch API (in-process)")
    results.summary = summary_of(results)
    print(f"\npgbench TPC-B (one shard server, 16 clients): {results.pgbench_tps:,.0f} tps")
    if results.floor is not None:
        print(f"floor, bare batched 2PC:  {results.floor.per_s:>10,.0f}/s = {results.floor.per_s / results.pgbench_tps:5.1f}x "
              f"pgbench{cpu_text(results.floor)}")
    for label, point in (("batch API 2PC", batch), ("engine 2PC, one per call", engine), ("unbatched 2PC", unbatched)):
        if point is None:
            continue
        ratio_pgbench = point.per_s / results.pgbench_tps if results.pgbench_tps else math.nan
        ratio_unbatched = point.per_s / unbatched.per_s if unbatched and unbatched.per_s else math.nan
        of_floor = f", {point.per_s / results.floor.per_s:4.0%} of the floor" if results.floor else ""
        nodes = math.ceil(TARGET_TRANSFERS_PER_S / point.per_s) if point.per_s else 0
        print(f"{label:<26} {point.per_s:>10,.0f}/s = {ratio_pgbench:5.1f}x pgbench, {ratio_unbatched:5.1f}x unbatched"
              f"{of_floor}; 1,000,000/s needs {nodes:,} such machines (at 1,000 TPS per node: 1,000)")
    for mode in ("tcc", "saga"):
        point = best(results, "batch API (in-process)", mode)
        if point and batch:
            print(f"batch API {mode:<5}            {point.per_s:>10,.0f}/s = {point.per_s / batch.per_s:4.2f}x 2PC")
    for name in (ZIPF_POINT, MERCHANT_POINT):
        point = best(results, name)
        if point and batch:
            print(f"{name:<40} {point.per_s:>10,.0f}/s = {point.per_s / batch.per_s:4.2f}x uniform")
    rest = best(results, REST_POINT)
    if rest is not None:
        floor_share = f", {rest.per_s / results.rest_floor.per_s:4.0%} of the REST floor " \
                      f"({results.rest_floor.per_s:,.0f}/s)" if results.rest_floor and results.rest_floor.per_s else ""
        print(f"REST, one per request     {rest.per_s:>10,.0f}/s = {rest.per_s / results.pgbench_tps:5.2f}x pgbench, "
              f"p99 {rest.p99_ms:,.1f} ms, errors {rest.failed}{floor_share}")
    client_us, server_us = results.statement_cpu_us
    if client_us is not None and server_us is not None:
        print(f"\nCPU of one SELECT 1 round trip here: client {client_us:,.0f} us + server {server_us:,.0f} us")
    cores = os.cpu_count() or 1
    for label, point in (("batch API 2PC", batch), ("engine 2PC, one per call", engine),
                         ("REST 2PC", best(results, REST_POINT))):
        if point is None or point.coordinator_cpu_us is None or point.postgres_cpu_us is None:
            continue
        per_transfer = point.coordinator_cpu_us + point.postgres_cpu_us
        print(f"{label:<26} CPU per transfer: coordinator {point.coordinator_cpu_us:,.0f} us + postgres "
              f"{point.postgres_cpu_us:,.0f} us = {per_transfer:,.0f} us; {cores} cores fit "
              f"{cores / per_transfer * 1e6:,.0f}/s at most")
    if results.relay is not None:
        print(f"relay, outbox to ledger: {results.relay.per_s:,.0f} events/s (2 per transfer){cpu_text(results.relay, 'event')}")
    print(f"money conserved: {'yes' if results.conserved else 'NO'}")
    for note in results.notes:
        print(f"note: {note}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wallet bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--accounts", type=int, default=100_000)
    parser.add_argument("--cross", type=float, default=0.75, help="fraction of cross-shard transfers (default 0.75)")
    parser.add_argument("--zipf", type=float, default=0.0, help="Zipf exponent for receivers; 0 = uniform")
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of each measured point")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[16, 64, 256, 1024])
    parser.add_argument("--batch", type=int, default=1000, help="transfers per batch-API call")
    parser.add_argument("--batch-clients", type=int, default=8, help="batch-API calls in flight")
    parser.add_argument("--modes", nargs="+", default=["2pc", "tcc", "saga"])
    parser.add_argument("--rest", action=argparse.BooleanOptionalAction, default=True, help="measure REST with wrk")
    parser.add_argument("--rest-connections", type=int, default=128)
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
        assert topology.ledger
        migrate.upgrade_all(topology)
        print(f"cluster up in {home}; pgbench baseline ...", flush=True)
        results.pgbench_tps = pgbench(cluster, args.seconds, clients=16)
        print(f"  pgbench TPC-B 16 clients: {results.pgbench_tps:,.0f} tps", flush=True)
        event_loop.run(measure(cluster, args, results, home))
    finally:
        cluster.stop()
        shutil.rmtree(home, ignore_errors=True)
    summarize(results)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps({**asdict(results)}, indent=2) + "\n")
    drawn = chart(results, args.out / "chart.png")
    print(f"results: {args.out / 'results.json'}" + (f", chart: {args.out / 'chart.png'}" if drawn else " (no chart: pip install matplotlib)"))
    return 0 if results.conserved else 1


if __name__ == "__main__":
    sys.exit(main())
