"""`wallet bench failover`: how long a shard is unavailable when its primary dies.

On an HA cluster (launchers/patroni.py: every shard a Patroni primary with a synchronous
standby), a load of transfers runs on one shard (one-shard and cross-shard, each a fresh
transaction id, retried with the same id while the answer is `shard_unavailable`); the
primary's postmaster is SIGKILLed, Patroni promotes the standby, the old primary rejoins as a
standby; then again. Per failover, the window is the first failed request on that shard to
the next success. At the end every transfer's outcome is learnt by retrying it, and the
balances must be what the acknowledged transfers, applied once, make them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

from coordinator.service.wallet import WalletService
from core.domain.errors import WalletError
from core.runtime.settings import Settings
from launchers.patroni import HaCluster
from launchers.postgres import temporary_home
from shards import migrate

# 99.99% of a year, the seeds' target: 52.6 minutes down.
YEAR_S = 365.25 * 24 * 3600
ALLOWED_DOWN_S = YEAR_S * (1 - 0.9999)
RETRY_PAUSE_S = 0.05
ATTEMPTS_MAX = 2_000  # per transfer: ~100 s of retries, far past any failover
HEALED_TIMEOUT_S = 120.0
ACCOUNTS_PER_SHARD = 40
START_CENTS = 1_000_000


@dataclass
class Window:
    killed_at_s: float
    first_failure_s: float | None  # None: no request failed (the kill fell between requests)
    next_success_s: float | None
    healed_s: float  # until the old primary streams again as the synchronous standby
    old_primary: str
    new_primary: str

    @property
    def window_s(self) -> float:
        if self.first_failure_s is None or self.next_success_s is None:
            return 0.0
        return self.next_success_s - self.first_failure_s


@dataclass
class FailoverReport:
    failovers: list[Window] = field(default_factory=list)
    transfers: int = 0
    acknowledged: int = 0
    lost: int = 0  # acknowledged transfers missing from the balances (must be 0)
    conserved: bool = True

    def windows_s(self) -> list[float]:
        return [window.window_s for window in self.failovers]

    def summary(self) -> dict[str, float]:
        windows = self.windows_s()
        median = statistics.median(windows) if windows else 0.0
        longest = max(windows) if windows else 0.0
        return {
            "failovers": len(windows),
            "window_min_s": min(windows) if windows else 0.0,
            "window_median_s": median,
            "window_max_s": longest,
            "failovers_per_year_allowed": ALLOWED_DOWN_S / longest if longest else 0.0,
            "transfers": self.transfers,
            "acknowledged": self.acknowledged,
            "lost": self.lost,
        }

    def table(self) -> str:
        lines = ["| failover | old primary -> new | window (s) | healed after (s) |", "|---:|---|---:|---:|"]
        for number, window in enumerate(self.failovers, 1):
            lines.append(
                f"| {number} | {window.old_primary} -> {window.new_primary} | {window.window_s:.2f} | "
                f"{window.healed_s:.1f} |"
            )
        summary = self.summary()
        lines.append(
            f"\nwindow min {summary['window_min_s']:.2f} s, median {summary['window_median_s']:.2f} s, max "
            f"{summary['window_max_s']:.2f} s; 99.99% ({ALLOWED_DOWN_S / 60:.1f} min a year) allows "
            f"{summary['failovers_per_year_allowed']:.0f} failovers a year at the max window; "
            f"{self.acknowledged}/{self.transfers} transfers acknowledged, {self.lost} lost, "
            f"money {'conserved' if self.conserved else 'NOT conserved'}"
        )
        return "\n".join(lines)


class Load:
    """Workers sending transfers that touch `shard`; each outcome timestamped."""

    def __init__(self, service: WalletService, local: list[str], remote: list[str], workers: int) -> None:
        self.service = service
        self.local, self.remote = local, remote
        self.workers = workers
        self.started = time.monotonic()
        self.events: list[tuple[float, bool]] = []  # (time, succeeded) of each attempt
        self.sent: list[dict[str, str]] = []
        self.outcomes: dict[str, str] = {}  # transaction id -> status or error code
        self.stopping = False

    def now(self) -> float:
        return time.monotonic() - self.started

    async def run(self) -> None:
        await asyncio.gather(*(self.worker(index) for index in range(self.workers)))

    async def worker(self, index: int) -> None:
        sequence = 0
        while not self.stopping:
            sequence += 1
            source = self.local[(index * 7 + sequence) % len(self.local)]
            pool = self.remote if sequence % 2 else self.local
            target = pool[(index * 13 + sequence * 3 + 1) % len(pool)]
            if target == source:
                continue
            transfer = {
                "from": source,
                "to": target,
                "amount": "0.01",
                "id": str(uuid.uuid4()),
                "mode": ("2pc", "tcc", "saga")[sequence % 3],
            }
            self.sent.append(transfer)
            self.outcomes[transfer["id"]] = await self.until_known(transfer)

    async def until_known(self, transfer: dict[str, str]) -> str:
        for _ in range(ATTEMPTS_MAX):
            try:
                result = await self.service.transfer(
                    transfer["from"], transfer["to"], transfer["amount"], "USD", transfer["id"], transfer["mode"]
                )
                self.events.append((self.now(), True))
                return result.status
            except WalletError as error:
                if error.code != "shard_unavailable":
                    self.events.append((self.now(), True))
                    return error.code
                self.events.append((self.now(), False))
            await asyncio.sleep(RETRY_PAUSE_S)
        return "unknown"

    def window_after(self, killed_at: float) -> tuple[float | None, float | None]:
        first_failure = next((t for t, ok in self.events if t >= killed_at and not ok), None)
        if first_failure is None:
            return None, None
        return first_failure, next((t for t, ok in self.events if t > first_failure and ok), None)


async def measure(
    cluster: HaCluster, service: WalletService, shard: str, failovers: int, workers: int = 16, between_s: float = 3.0
) -> FailoverReport:
    """Failovers of `shard` under load; the service was opened on `cluster`'s topology."""
    topology = service.topology
    other = next(name for name in sorted(topology.shards) if name != shard)
    local = topology.ids_on(shard, ACCOUNTS_PER_SHARD, "fo-" + uuid.uuid4().hex[:6])
    remote = topology.ids_on(other, ACCOUNTS_PER_SHARD, "fo-" + uuid.uuid4().hex[:6])
    for account_id in local + remote:
        await service.create_account(account_id, "failover bench", "USD")
        await service.deposit(account_id, f"{START_CENTS // 100}.00", str(uuid.uuid4()))
    load = Load(service, local, remote, workers)
    report = FailoverReport()
    running = asyncio.create_task(load.run())
    try:
        for _ in range(failovers):
            await asyncio.sleep(between_s)
            old = cluster.leader(shard)
            assert old is not None, f"{shard} has no leader before the failover"
            killed_at = load.now()
            await asyncio.to_thread(cluster.kill_postmaster, old)
            new = await asyncio.to_thread(cluster.wait_new_leader, shard, old, HEALED_TIMEOUT_S)
            await asyncio.to_thread(cluster.wait_healthy, shard, HEALED_TIMEOUT_S)
            healed = load.now() - killed_at
            deadline = time.monotonic() + HEALED_TIMEOUT_S
            while load.window_after(killed_at)[0] is not None and load.window_after(killed_at)[1] is None:
                assert time.monotonic() < deadline, f"{shard}: no success after the failover"
                await asyncio.sleep(0.1)
            first_failure, next_success = load.window_after(killed_at)
            report.failovers.append(Window(killed_at, first_failure, next_success, healed, old.name, new.name))
        await asyncio.sleep(between_s)
    finally:
        load.stopping = True
        await running
    report.transfers = len(load.sent)
    acknowledged = [t for t in load.sent if load.outcomes.get(t["id"]) == "success"]
    report.acknowledged = len(acknowledged)
    expected = {account_id: START_CENTS for account_id in local + remote}
    for transfer in acknowledged:
        expected[transfer["from"]] -= 1
        expected[transfer["to"]] += 1
    actual = {account_id: (await service.get_account(account_id)).balance for account_id in expected}
    report.lost = sum(1 for account_id in expected if actual[account_id] != expected[account_id])
    report.conserved = sum(actual.values()) == START_CENTS * len(expected)
    return report


async def run(args: argparse.Namespace) -> FailoverReport:
    home = temporary_home("failover")
    cluster = HaCluster(home, shard_count=2, members=2, ledger=False)
    try:
        topology = await asyncio.to_thread(cluster.start)
        await asyncio.to_thread(migrate.upgrade_all, topology)
        settings = Settings(home=home, topology_path=cluster.topology_path)
        service = await WalletService(topology, settings).open(run_recovery=True)
        try:
            return await measure(cluster, service, "shard0", args.failovers, args.workers, args.between)
        finally:
            await service.close()
    finally:
        await asyncio.to_thread(cluster.stop)
        shutil.rmtree(home, ignore_errors=True)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="wallet bench failover", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--failovers", type=int, default=5, help="primaries killed, one after another (default 5)")
    parser.add_argument("--workers", type=int, default=16, help="transfers in flight (default 16)")
    parser.add_argument("--between", type=float, default=3.0, help="seconds of healthy load between failovers")
    parser.add_argument("--out", type=Path, default=None, help="write failover.json here")
    args = parser.parse_args(argv)
    if not 1 <= args.failovers <= 100:
        parser.error("--failovers must be 1..100")
    report = asyncio.run(run(args))
    print(report.table())
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "failover.json").write_text(
            json.dumps(
                {
                    "summary": report.summary(),
                    "failovers": [asdict(w) | {"window_s": w.window_s} for w in report.failovers],
                },
                indent=2,
            )
            + "\n"
        )
    return 0 if report.lost == 0 and report.conserved else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
