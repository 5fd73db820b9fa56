"""A `wallet bench` run as Markdown: every point with its ratios against the baselines of the
same run, the relay, and the statements and round trips of a lone transfer. `wallet bench`
writes it beside results.json; docs/figures.md includes the committed run's
(bench/latest-results.md), so the figures page is what the run measured, not a copy."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from bench.points import Point, Results


def markdown(results: Results) -> str:
    return "\n".join([*points_table(results), "", *round_trips_table(results), ""])


def points_table(results: Results) -> list[str]:
    floor, pgbench = results.floor, results.pgbench_tps
    lines = [
        f"pgbench TPC-B on one shard server, 16 clients: **{pgbench:,.0f} tps**. "
        + (f"The floor, bare batched 2PC: **{floor.per_s:,.0f}/s**." if floor else ""),
        "",
        "| point | clients × per call | transfers/s | p50 | p99 | vs pgbench | of the floor "
        "| CPU per transfer: coordinator + PostgreSQL |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    named = [*([floor] if floor else []), *results.points, *([results.rest_floor] if results.rest_floor else [])]
    for point in named:
        # the floors are the baselines: no share of the 2PC floor for either
        lines.append(row(point, pgbench, None if point in (floor, results.rest_floor) else floor))
    relay = results.relay
    if relay is not None:
        lines.append(
            f"| {relay.name}: {relay.transfers:,} events | | {relay.per_s:,.0f} events/s | | | | | "
            f"{cpu(relay)} per event |"
        )
    client_us, server_us = results.statement_cpu_us
    if client_us is not None and server_us is not None:
        lines.append(f"| one `SELECT 1` round trip | | | | | | | {client_us:,.0f} + {server_us:,.0f} µs |")
    lines.append("")
    lines.append(f"Money conserved after every point: {'yes' if results.conserved else '**no**'}.")
    return lines


def row(point: Point, pgbench: float, floor: Point | None) -> str:
    name = point.name + (f" ({point.mode})" if point.mode not in ("2pc", "-") else "")
    if point.outbox_lag_s is not None:
        name += f", outbox lag at the end {point.outbox_lag_s:.2f} s"
    versus = f"{point.per_s / pgbench:.2f}×" if pgbench else ""
    share = f"{point.per_s / floor.per_s:.0%}" if floor and floor.per_s else ""
    return (
        f"| {name} | {point.concurrency:,} × {point.per_call:,} | {point.per_s:,.0f} | {point.p50_ms:,.1f} ms "
        f"| {point.p99_ms:,.1f} ms | {versus} | {share} | {cpu(point)} |"
    )


def cpu(point: Point) -> str:
    if point.coordinator_cpu_us is None or point.postgres_cpu_us is None:
        return ""
    return f"{point.coordinator_cpu_us:,.0f} + {point.postgres_cpu_us:,.0f} µs"


def round_trips_table(results: Results) -> list[str]:
    if not results.round_trips:
        return []
    lines = [
        "One lone transfer (`bench/round_trips.py`):",
        "",
        "| protocol | statements | round trips in a row |",
        "|---|---:|---:|",
    ]
    for mode, cost in results.round_trips.items():
        lines.append(f"| {mode} | {cost['statements']} | {cost['round_trips']} |")
    return lines


def load(path: Path) -> Results:
    """A results.json back as Results (to render a run again)."""
    raw: dict[str, Any] = json.loads(path.read_text())

    def point(value: dict[str, Any] | None) -> Point | None:
        return Point(**value) if value is not None else None

    return Results(
        settings=raw["settings"],
        pgbench_tps=raw["pgbench_tps"],
        statement_cpu_us=(raw["statement_cpu_us"][0], raw["statement_cpu_us"][1]),
        round_trips=raw["round_trips"],
        relay=point(raw["relay"]),
        floor=point(raw["floor"]),
        rest_floor=point(raw["rest_floor"]),
        points=[Point(**value) for value in raw["points"]],
        conserved=raw["conserved"],
        notes=raw["notes"],
        summary=raw["summary"],
    )


if __name__ == "__main__":  # python -m bench.tables results.json > results.md
    sys.stdout.write(markdown(load(Path(sys.argv[1]))))
