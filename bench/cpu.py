"""Where a point's CPU went: the coordinator process and the cluster's PostgreSQL servers.

On a machine where the coordinator and four shard servers share two cores, transfers/s
is CPU divided by CPU per transfer; these counters say which side to make cheaper. Read
from /proc (Linux); elsewhere every figure is None and the report leaves it out.
"""

from __future__ import annotations

import os
from pathlib import Path

import asyncpg

from launchers.postgres import LocalCluster

_PROC = Path("/proc")
STATEMENTS_MEASURED = 2000
STATEMENT_ROUNDS_MAX = 20
STATEMENT_CPU_READABLE_S = 0.05  # five ticks


def _ticks() -> float:
    return float(os.sysconf("SC_CLK_TCK"))


def process_cpu_s(pid: int) -> float | None:
    """User+system CPU seconds so far of `pid` and of every process under it, live or reaped
    (`wallet serve` is an engine with HTTP and relay processes under it)."""
    if not _PROC.exists():
        return None
    children: dict[int, list[int]] = {}
    stats: dict[int, list[str]] = {}
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        stats[int(entry.name)] = fields
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    if pid not in stats:
        return None
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        found = stats.get(current)
        if found is not None:  # utime, stime, and the children it has waited for: cutime, cstime
            total += int(found[11]) + int(found[12]) + int(found[13]) + int(found[14])
            todo.extend(children.get(current, []))
    return total / _ticks()


def postgres_cpu_s(cluster: LocalCluster) -> float | None:
    """CPU seconds of every server of the cluster: postmasters (with their reaped backends)
    and the live processes they forked."""
    if not _PROC.exists():
        return None
    postmasters: set[int] = set()
    for server in cluster.servers:
        try:
            postmasters.add(int((server.data_dir / "postmaster.pid").read_text().split()[0]))
        except (OSError, ValueError, IndexError):
            continue
    total = 0.0
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        pid, parent = int(entry.name), int(fields[1])
        if pid in postmasters:
            total += (int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])) / _ticks()
        elif parent in postmasters:
            total += (int(fields[11]) + int(fields[12])) / _ticks()
    return total


class CpuMeter:
    """CPU used between start() and stop() by one process (default: this one) with the processes
    under it, and by the cluster."""

    def __init__(self, cluster: LocalCluster, pid: int | None = None) -> None:
        self.cluster, self.pid = cluster, pid or os.getpid()
        self.process_s: float | None = None
        self.postgres_s: float | None = None

    def start(self) -> CpuMeter:
        self._process0, self._postgres0 = process_cpu_s(self.pid), postgres_cpu_s(self.cluster)
        return self

    def stop(self) -> CpuMeter:
        process, postgres = process_cpu_s(self.pid), postgres_cpu_s(self.cluster)
        if process is not None and self._process0 is not None:
            self.process_s = process - self._process0
        if postgres is not None and self._postgres0 is not None:
            self.postgres_s = postgres - self._postgres0
        return self

    def per_transfer_us(self, transfers: int) -> tuple[float | None, float | None]:
        if transfers <= 0:
            return None, None
        process, postgres = self.process_s, self.postgres_s
        return (
            None if process is None else process / transfers * 1e6,
            None if postgres is None else postgres / transfers * 1e6,
        )


async def statement_cost_us(cluster: LocalCluster, dsn: str) -> tuple[float | None, float | None]:
    """CPU of one `SELECT 1` round trip on this machine: (client µs, all servers µs). The
    floor under every statement a batch sends. The kernel counts CPU in ticks (10 ms), so
    rounds go on until each side has used enough ticks to be read (bounded)."""
    connection = await asyncpg.connect(dsn)
    try:
        await connection.fetchval("SELECT 1")
        meter = CpuMeter(cluster).start()
        statements = 0
        for _ in range(STATEMENT_ROUNDS_MAX):
            for _ in range(STATEMENTS_MEASURED):
                await connection.fetchval("SELECT 1")
            statements += STATEMENTS_MEASURED
            meter.stop()
            if meter.process_s is None or meter.postgres_s is None:
                break
            if min(meter.process_s, meter.postgres_s) >= STATEMENT_CPU_READABLE_S:
                break
    finally:
        await connection.close()
    return meter.per_transfer_us(statements)
