"""What a `wallet bench` run reports: each point as it is measured, the summary's keys, the
closing lines (ratios against the baselines of the same run) and the chart."""

from __future__ import annotations

import math
import os
from pathlib import Path

from bench.points import Point, Results
from bench.rest import AGAIN_POINT, DEFAULTS_POINT, REST_POINT, SOURCE_POINT, SUSTAINED_REST_POINT, TRACED_POINT

TRACING_POINTS = "REST, tracing on"  # the start of every tracing point's name (bench/rest.py)

TARGET_TRANSFERS_PER_S = 1_000_000
ENGINE_POINT, UNBATCHED_POINT = "engine, one transfer per call", "unbatched, one transfer per call"
BATCH_POINT = "batch API (in-process)"
SUSTAINED_BATCH_POINT = "sustained: batch API with the relay process"
# The batch API with hot accounts: (point name, the workload's skew)
ZIPF_POINT, MERCHANT_POINT = "batch API, Zipf 1.0 receivers", "batch API, one merchant receives 20%"
HOT_WORKLOADS = ((ZIPF_POINT, 1.0, 0.0), (MERCHANT_POINT, 0.0, 0.2))  # (name, Zipf exponent, merchant's share)
# Curves drawn in the chart: (point name, colour)
CURVES = ((ENGINE_POINT, "tab:blue"), (UNBATCHED_POINT, "tab:gray"), (REST_POINT, "tab:red"))


def report(point: Point, results: Results | None = None) -> None:
    floor = results.floor if results is not None else None
    share = f" ({point.per_s / floor.per_s:4.0%} of the floor)" if floor and floor.per_s and point is not floor else ""
    extra = "" if point.outbox_lag_s is None else f"  outbox lag at the end {point.outbox_lag_s:.2f} s"
    extra += "" if point.conserved in (None, True) else "  MONEY NOT CONSERVED"
    print(
        f"  {point.name:<44} {point.mode:<5} clients {point.concurrency:>5} x{point.per_call:<5} "
        f"{point.per_s:>10,.0f}/s{share}  p50 {point.p50_ms:7.1f} ms  p99 {point.p99_ms:7.1f} ms  "
        f"p999 {point.p999_ms:7.1f} ms  failed {point.failed}{cpu_text(point)}{extra}",
        flush=True,
    )


def cpu_text(point: Point, unit: str = "transfer") -> str:
    if point.coordinator_cpu_us is None or point.postgres_cpu_us is None:
        return ""
    return f"  cpu/{unit}: coordinator {point.coordinator_cpu_us:,.0f} us, postgres {point.postgres_cpu_us:,.0f} us"


def best(results: Results, name: str, mode: str = "2pc", concurrency: int | None = None) -> Point | None:
    found = [
        p
        for p in results.points
        if p.name == name and p.mode == mode and (concurrency is None or p.concurrency == concurrency)
    ]
    return max(found, key=lambda p: p.per_s) if found else None


def summary_of(results: Results, rest_connections: int = 128) -> dict[str, float | None]:
    """The figures every run reports, by name (None: the point was not measured)."""

    def rate(point: Point | None) -> float | None:
        return round(point.per_s, 1) if point is not None else None

    def p99(point: Point | None) -> float | None:
        return round(point.p99_ms, 1) if point is not None else None

    def cpu(point: Point | None, side: str) -> float | None:
        value = getattr(point, f"{side}_cpu_us", None) if point is not None else None
        return round(value, 1) if value is not None else None

    batch = best(results, BATCH_POINT)
    rest = best(results, REST_POINT, concurrency=rest_connections)
    defaults, sustained = best(results, DEFAULTS_POINT), best(results, SUSTAINED_BATCH_POINT)
    sustained_rest, rest_1024 = best(results, SUSTAINED_REST_POINT), best(results, REST_POINT, concurrency=1024)
    traced = best(results, TRACED_POINT)
    return {
        "pgbench_tps": round(results.pgbench_tps, 1),
        "floor_tps": rate(results.floor),
        "batch_2pc_tps": rate(batch),
        "batch_tcc_tps": rate(best(results, BATCH_POINT, "tcc")),
        "batch_saga_tps": rate(best(results, BATCH_POINT, "saga")),
        "engine_1024_tps": rate(best(results, ENGINE_POINT, concurrency=1024)),
        "rest_tps": rate(rest),
        "rest_p99_ms": p99(rest),
        "rest_coordinator_cpu_us": cpu(rest, "coordinator"),
        "rest_postgres_cpu_us": cpu(rest, "postgres"),
        "rest_1024_tps": rate(rest_1024),
        "rest_1024_p99_ms": p99(rest_1024),
        "rest_defaults_tps": rate(defaults),
        "rest_defaults_p99_ms": p99(defaults),
        "rest_floor_tps": rate(results.rest_floor),
        "rest_floor_coordinator_cpu_us": cpu(results.rest_floor, "coordinator"),
        "sustained_tps": rate(sustained),
        "sustained_outbox_lag_s": sustained.outbox_lag_s if sustained is not None else None,
        "sustained_rest_tps": rate(sustained_rest),
        "sustained_rest_outbox_lag_s": sustained_rest.outbox_lag_s if sustained_rest is not None else None,
        "zipf_2pc_tps": rate(best(results, ZIPF_POINT)),
        "merchant_2pc_tps": rate(best(results, MERCHANT_POINT)),
        "batch_2pc_coordinator_cpu_us": cpu(batch, "coordinator"),
        "batch_2pc_postgres_cpu_us": cpu(batch, "postgres"),
        "relay_events_per_s": rate(results.relay),
        "rest_tracing_tps": rate(traced),
        "rest_tracing_p99_ms": p99(traced),
        "rest_tracing_coordinator_cpu_us": cpu(traced, "coordinator"),
        "rest_again_tps": rate(best(results, AGAIN_POINT)),
        "rest_source_tps": rate(best(results, SOURCE_POINT)),
    }


def summarize(results: Results, rest_connections: int = 128) -> None:
    results.summary = summary_of(results, rest_connections)
    engine, unbatched, batch = best(results, ENGINE_POINT), best(results, UNBATCHED_POINT), best(results, BATCH_POINT)
    print(f"\npgbench TPC-B (one shard server, 16 clients): {results.pgbench_tps:,.0f} tps")
    if results.floor is not None:
        print(
            f"floor, bare batched 2PC:  {results.floor.per_s:>10,.0f}/s = "
            f"{results.floor.per_s / results.pgbench_tps:5.1f}x pgbench{cpu_text(results.floor)}"
        )
    for label, point in (("batch API 2PC", batch), ("engine 2PC, one per call", engine), ("unbatched 2PC", unbatched)):
        if point is None:
            continue
        ratio_pgbench = point.per_s / results.pgbench_tps if results.pgbench_tps else math.nan
        ratio_unbatched = point.per_s / unbatched.per_s if unbatched and unbatched.per_s else math.nan
        of_floor = f", {point.per_s / results.floor.per_s:4.0%} of the floor" if results.floor else ""
        nodes = math.ceil(TARGET_TRANSFERS_PER_S / point.per_s) if point.per_s else 0
        print(
            f"{label:<26} {point.per_s:>10,.0f}/s = {ratio_pgbench:5.1f}x pgbench, {ratio_unbatched:5.1f}x unbatched"
            f"{of_floor}; 1,000,000/s needs {nodes:,} such machines (at 1,000 TPS per node: 1,000)"
        )
    for mode in ("tcc", "saga"):
        point = best(results, BATCH_POINT, mode)
        if point and batch:
            print(f"batch API {mode:<5}            {point.per_s:>10,.0f}/s = {point.per_s / batch.per_s:4.2f}x 2PC")
    for name in (ZIPF_POINT, MERCHANT_POINT):
        point = best(results, name)
        if point and batch:
            print(f"{name:<40} {point.per_s:>10,.0f}/s = {point.per_s / batch.per_s:4.2f}x uniform")
    summarize_rest(results, rest_connections)
    client_us, server_us = results.statement_cpu_us
    if client_us is not None and server_us is not None:
        print(f"\nCPU of one SELECT 1 round trip here: client {client_us:,.0f} us + server {server_us:,.0f} us")
    cores = os.cpu_count() or 1
    for label, point in (
        ("batch API 2PC", batch),
        ("engine 2PC, one per call", engine),
        ("REST 2PC", best(results, REST_POINT, concurrency=rest_connections)),
    ):
        if point is None or point.coordinator_cpu_us is None or point.postgres_cpu_us is None:
            continue
        per_transfer = point.coordinator_cpu_us + point.postgres_cpu_us
        print(
            f"{label:<26} CPU per transfer: coordinator {point.coordinator_cpu_us:,.0f} us + postgres "
            f"{point.postgres_cpu_us:,.0f} us = {per_transfer:,.0f} us; {cores} cores fit "
            f"{cores / per_transfer * 1e6:,.0f}/s at most"
        )
    if results.relay is not None:
        print(
            f"relay, outbox to ledger: {results.relay.per_s:,.0f} events/s (2 per transfer)"
            f"{cpu_text(results.relay, 'event')}"
        )
    for mode, cost in results.round_trips.items():
        print(
            f"one lone {mode:<5} transfer: {cost['statements']} statements, {cost['round_trips']} round trips in a row"
        )
    print(f"money conserved after every point: {'yes' if results.conserved else 'NO'}")
    for note in results.notes:
        print(f"note: {note}")


def summarize_rest(results: Results, rest_connections: int) -> None:
    rest, pgbench, floor = (
        best(results, REST_POINT, concurrency=rest_connections),
        results.pgbench_tps,
        results.rest_floor,
    )
    if rest is not None:
        floor_share = (
            f", {rest.per_s / floor.per_s:4.0%} of the REST floor ({floor.per_s:,.0f}/s)"
            if floor and floor.per_s
            else ""
        )
        print(
            f"REST, one per request     {rest.per_s:>10,.0f}/s = {rest.per_s / pgbench:5.2f}x pgbench, "
            f"p99 {rest.p99_ms:,.1f} ms, errors {rest.failed}{floor_share}"
        )
        if floor is not None and floor.coordinator_cpu_us and rest.coordinator_cpu_us:
            print(
                f"REST coordinator CPU per transfer: {rest.coordinator_cpu_us / floor.coordinator_cpu_us:4.1f}x "
                f"the REST floor's"
            )
        batch = best(results, BATCH_POINT)
        if batch is not None and batch.postgres_cpu_us and rest.postgres_cpu_us:
            print(
                f"REST PostgreSQL CPU per transfer: {rest.postgres_cpu_us / batch.postgres_cpu_us:4.1f}x "
                "the batch API's"
            )
    summarize_comparison(results, rest)
    for name in (DEFAULTS_POINT, SUSTAINED_REST_POINT, SUSTAINED_BATCH_POINT):
        point = best(results, name)
        if point is not None:
            lag = "" if point.outbox_lag_s is None else f", outbox lag at the end {point.outbox_lag_s:.2f} s"
            print(
                f"{name:<44} {point.per_s:>10,.0f}/s = {point.per_s / pgbench:5.2f}x pgbench, "
                f"p99 {point.p99_ms:,.1f} ms{lag}"
            )


def summarize_comparison(results: Results, rest: Point | None) -> None:
    """Tracing on and another build against the two tracing-off points (128 connections)."""
    again = best(results, AGAIN_POINT)
    if rest is None or again is None or rest.concurrency != 128:
        return
    low, high = sorted((rest.per_s, again.per_s))
    print(
        f"REST, tracing off twice       {rest.per_s:>10,.0f}/s and {again.per_s:,.0f}/s: "
        f"run-to-run noise {(high - low) / high:.1%}{cpu_text(rest)}"
    )
    for point in results.points:
        if point.name.startswith(TRACING_POINTS) or point.name == SOURCE_POINT:
            spans = (
                f", {point.spans_exported / point.transfers:.1f} spans exported per transfer"
                if point.spans_exported is not None and point.transfers
                else ""
            )
            print(
                f"{point.name:<44} {point.per_s:>10,.0f}/s = {point.per_s / high:5.2f}x the better tracing-off point, "
                f"p99 {point.p99_ms:,.1f} ms{spans}{cpu_text(point)}"
            )


def chart(results: Results, path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    figure, throughput_axis = plt.subplots(figsize=(8, 4.5))
    latency_axis = throughput_axis.twinx()
    for name, colour in CURVES:
        series = sorted((p for p in results.points if p.name == name and p.mode == "2pc"), key=lambda p: p.concurrency)
        if not series:
            continue
        xs = [p.concurrency for p in series]
        throughput_axis.plot(xs, [p.per_s for p in series], "o-", color=colour, label=f"{name}: transfers/s")
        latency_axis.plot(xs, [p.p99_ms for p in series], "s--", color=colour, alpha=0.6, label=f"{name}: p99 ms")
    throughput_axis.set_xscale("log", base=2)
    throughput_axis.set_xlabel("concurrent clients (REST: connections)")
    throughput_axis.set_ylabel("transfers/s")
    latency_axis.set_ylabel("p99 latency (ms)")
    throughput_axis.set_title(
        f"2PC, {int(float(str(results.settings['cross'])) * 100)}% cross-shard, "
        f"{results.settings['accounts']} accounts, fsync on"
    )
    handles = throughput_axis.get_legend_handles_labels()[0] + latency_axis.get_legend_handles_labels()[0]
    labels = throughput_axis.get_legend_handles_labels()[1] + latency_axis.get_legend_handles_labels()[1]
    throughput_axis.legend(handles, labels, fontsize=7, loc="upper left")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True
