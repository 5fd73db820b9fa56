"""REST points: `wallet serve` as its own processes (the engine, its HTTP processes and, with the
relay on, the relay process), or the REST floor's bare handler, driven by wrk, one transfer
per request. Every point's CPU is that of the server's processes together.

The comparison points (`--tracing`, `--rest-source`) run the tuned server again beside the
tuned point at the same connections: with tracing on, every request traced and exported to
a local OTLP receiver (launchers/otlp_sink.py, in the benchmark's process: its CPU is not
the server's); the code of another checkout (say `git archive main`), to measure a change
against the build without it; and the tuned server once more, so the spread of the two
tracing-off points shows the run-to-run noise the others are read against."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from bench.cpu import CpuMeter
from bench.points import Point, outbox_lag_s
from bench.workload import Workload
from launchers.otlp_sink import OtlpSink
from launchers.postgres import LocalCluster, free_port
from wallet_client import WalletClient

REST_POINT = "REST, one transfer per request (wrk)"
DEFAULTS_POINT = "REST, make run defaults (relay on, info logs)"
SUSTAINED_REST_POINT = "sustained: REST, make run defaults"
FLOOR_POINT = "REST floor, bare handler (wrk)"
TRACED_POINT = "REST, tracing on (OTLP to a local sink)"  # every request traced
SAMPLED_POINT = "REST, tracing on, {:.0%} of requests sampled"
SOURCE_POINT = "REST, the build of --rest-source"
AGAIN_POINT = "REST, tracing off again (noise)"
WRK_TIMEOUT_S = 10
WRK_THREADS = 2

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
    summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write
      + summary.errors.timeout,
    summary.duration, latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency:percentile(99.9) / 1000))
end
"""


@dataclass(frozen=True)
class Server:
    """Which server a REST point runs, and how."""

    name: str
    floor: bool = False  # the bare handler (bench/rest_floor.py), not `wallet serve`
    defaults: bool = False  # exactly what `make run` runs: the relay on, logs at INFO
    lag: bool = False  # report the outbox lag at the end (a sustained point)
    tracing: bool = False  # requests traced, their spans exported to a local OTLP sink
    sample_ratio: float = 1.0  # with tracing: the share of requests traced
    source: Path | None = None  # the code of this checkout, not this one's (another build)


TUNED = Server(REST_POINT)
DEFAULTS = Server(DEFAULTS_POINT, defaults=True)
SUSTAINED = Server(SUSTAINED_REST_POINT, defaults=True, lag=True)
FLOOR = Server(FLOOR_POINT, floor=True)
AGAIN = Server(AGAIN_POINT)


def traced(sample_ratio: float) -> Server:
    name = TRACED_POINT if sample_ratio == 1.0 else SAMPLED_POINT.format(sample_ratio)
    return Server(name, tracing=True, sample_ratio=sample_ratio)


def other_build(source: Path) -> Server:
    return Server(SOURCE_POINT, source=source.resolve())


def rest_point(
    cluster: LocalCluster,
    workload: Workload,
    mode: str,
    connections: int,
    seconds: float,
    workdir: Path,
    server: Server = TUNED,
) -> Point | None:
    """One REST point, or None without wrk. The tuned server runs with the relay in a process
    of its own that is not started (WALLET_RELAY=off: it was measured on its own before) and
    logs at WARNING; the defaults are `make run`'s."""
    if shutil.which("wrk") is None:
        return None
    with OtlpSink(keep=False) if server.tracing else contextlib.nullcontext() as sink:
        point = serve_and_measure(cluster, workload, mode, connections, seconds, workdir, server, sink)
        if sink is not None:  # the server has stopped: what it queued is exported
            point.spans_exported = sink.spans_received
    return point


def serve_and_measure(
    cluster: LocalCluster,
    workload: Workload,
    mode: str,
    connections: int,
    seconds: float,
    workdir: Path,
    server: Server,
    sink: OtlpSink | None,
) -> Point:
    from coordinator.api.auth import issue_token, load_secret
    from core.runtime.settings import Settings

    port = free_port()
    secret = load_secret(Settings(home=cluster.home, topology_path=cluster.topology_path), create=True)
    token = issue_token(secret or "", "bench", "admin")  # an admin token: its own, higher rate limit
    process = subprocess.Popen(
        server_command(server, port),
        env=server_environment(server, cluster, port, sink),
        cwd=server.source,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        asyncio.run(ready(f"http://127.0.0.1:{port}", token))  # the API's own client says when it serves
        pairs = ",".join(f'{{"{a}","{b}"}}' for a, b in (workload.pair() for _ in range(20_000)))
        script = workdir / "transfer.lua"
        script.write_text(WRK_SCRIPT % {"pairs": pairs, "mode": mode, "token": token})
        meter = CpuMeter(cluster, process.pid).start()
        requests, errors, duration_us, latencies = run_wrk(script, port, connections, seconds)
        meter.stop()
        point = Point(server.name, mode, connections, 1)
        point.transfers, point.failed, point.seconds = requests - errors, errors, duration_us / 1e6
        point.cpu(meter)
        point.per_s = point.transfers / point.seconds
        point.p50_ms, point.p99_ms, point.p999_ms = latencies
        if server.lag:
            point.outbox_lag_s = asyncio.run(outbox_lag_s(cluster.topology))
        return point
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def server_command(server: Server, port: int) -> list[str]:
    if server.floor:
        return [sys.executable, "-m", "bench.rest_floor", str(port)]
    return [sys.executable, "-m", "coordinator.cli.main", "serve"]


def server_environment(server: Server, cluster: LocalCluster, port: int, sink: OtlpSink | None) -> dict[str, str]:
    environment = {**os.environ, "WALLET_HOME": str(cluster.home), "WALLET_PORT": str(port)}
    for name in (
        "WALLET_AUTH_SECRET",
        "WALLET_RELAY",
        "WALLET_LOG_LEVEL",
        "WALLET_OTLP_ENDPOINT",
        "WALLET_TRACE_SAMPLE_RATIO",
    ):
        environment.pop(name, None)
    if not server.defaults:
        environment.update({"WALLET_LOG_LEVEL": "warning", "WALLET_RELAY": "off"})
    if sink is not None:
        environment["WALLET_OTLP_ENDPOINT"] = sink.endpoint
        environment["WALLET_TRACE_SAMPLE_RATIO"] = str(server.sample_ratio)
    if server.source is not None:  # its packages before this checkout's (installed editable)
        environment["PYTHONPATH"] = str(server.source)
    return environment


def run_wrk(
    script: Path, port: int, connections: int, seconds: float
) -> tuple[int, int, int, tuple[float, float, float]]:
    """(requests, errors, duration in µs, (p50, p99, p999) in ms) of one wrk run."""
    command = [
        "wrk",
        "-t",
        str(WRK_THREADS),
        "-c",
        str(connections),
        "-d",
        f"{max(1, int(seconds))}s",
        "--timeout",
        f"{WRK_TIMEOUT_S}s",
        "-s",
        str(script),
        f"http://127.0.0.1:{port}",
    ]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 120)
    match = re.search(r"RESULT (\d+) (\d+) (\d+) ([0-9.]+) ([0-9.]+) ([0-9.]+)", completed.stdout)
    assert match, completed.stdout + completed.stderr
    p50, p99, p999 = (float(match.group(i)) for i in (4, 5, 6))
    return int(match.group(1)), int(match.group(2)), int(match.group(3)), (p50, p99, p999)


async def ready(url: str, token: str) -> None:
    async with WalletClient(url, token=token) as client:
        await client.wait_ready(timeout_s=60)
