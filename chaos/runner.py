"""`wallet chaos`: a Jepsen-style bank workload against real processes under faults.

One run: the shards (and the ledger server) of a local cluster, coordinators as
`wallet serve` subprocesses whose topology sends one shard through a faulty TCP proxy,
concurrent random transfers over REST in every mode, periodic reads, and a seeded fault
schedule (schedule.py). Then the faults stop, every transfer with an unknown outcome is
retried until the service says what happened, recovery and the relay converge, and the
checker (checker.py) judges the databases against what the client saw.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import random
import secrets
import shutil
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

from chaos import schedule as faults
from chaos import workload
from chaos.checker import LIVE, Anomaly, CheckReport, check_run
from chaos.client import Headers, RestClient
from chaos.history import Answer, Read, TransferRecord, format_minor
from chaos.naive import NaiveTransfers
from chaos.processes import Coordinator, pause_shard, resume_shard
from chaos.proxy import FaultyProxy
from chaos.workload import CURRENCY, DEPOSIT_MINOR, MODES, next_transfer
from coordinator.api.auth import issue_token
from coordinator.service.wallet import WalletService
from core.runtime.fan_out import fan_out
from core.runtime.fault_points import SERVING_FAULT_POINTS
from core.runtime.settings import Settings
from launchers.patroni import HaCluster, Member
from launchers.postgres import LocalCluster, free_port, temporary_home
from launchers.zookeeper import LocalZooKeeper
from shard_router.file_store import FileTopologyStore
from shard_router.stores import connect_zookeeper
from shard_router.zookeeper_store import ZooKeeperTopologyStore
from wallet_client import RetryPolicy

log = logging.getLogger("wallet.chaos")

RETRIES_DURING_RUN = 2  # a worker's retries of an unknown outcome before it moves on
RETRY_PAUSE_S = 0.5
READ_INTERVAL_S = 0.5
READ_TIMEOUT_S = 2.0
FAULT_POINT_WAIT_S = 30.0  # an armed coordinator must reach its step within this
# A short covering run arms a point missed under a bad moment (locks held by another
# fault's in-doubt branches, say) this many times more, after the rest of its schedule.
COVER_REARMS_MAX = 2
SUPERVISE_INTERVAL_S = 0.5
WORKERS_MAX = 256
SCHEDULE_SLACK = 2.0
ZK_SESSION_TIMEOUT_MS = 4000  # a killed leader's role passes on after this


@dataclass
class ChaosConfig:
    seconds: float = 60.0  # the workload's length; a cover-only run lasts as long as its schedule
    seed: int = 1
    coordinators: int = 2
    workers: int = 8
    accounts_per_shard: int = 6
    proxied_shard: str = "shard1"
    fault_points: tuple[str, ...] = tuple(sorted(SERVING_FAULT_POINTS))
    cover_only: bool = False  # one cycle: every fault kind and every fault point once
    hold_scale: float = 1.0
    naive: bool = False  # the broken two-update transfer (naive.py), no coordinator, no faults
    headers: Headers | None = None  # called per request, e.g. to mint a bearer token
    coordinator_env: dict[str, str] = field(default_factory=dict)  # e.g. the API's auth settings
    # ZooKeeper hosts: the coordinators take the topology from there and elect the one that
    # runs recovery and the relay (a killed leader hands over after its session expires).
    zookeeper: str | None = None
    # Every shard and the ledger a Patroni primary with a synchronous standby: members are
    # killed (primary_kill, standby_kill) instead of whole shards crashed or paused.
    ha: bool = False
    say: Callable[[str], None] = print

    @property
    def kinds(self) -> tuple[str, ...]:
        return faults.HA_KINDS if self.ha else faults.KINDS

    def __post_init__(self) -> None:
        assert 1 <= self.workers <= WORKERS_MAX, f"workers must be in 1..{WORKERS_MAX}"
        assert self.seconds > 0, "seconds must be positive"


@dataclass
class ChaosReport:
    config: ChaosConfig
    seconds: float
    tried: Counter[str] = field(default_factory=Counter)
    succeeded: Counter[str] = field(default_factory=Counter)
    failed: Counter[str] = field(default_factory=Counter)
    unknown: Counter[str] = field(default_factory=Counter)  # never resolved (each is an anomaly)
    timed_out: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    points_reached: list[str] = field(default_factory=list)
    points_missed: list[str] = field(default_factory=list)
    reads: int = 0
    check: CheckReport = field(default_factory=CheckReport)

    @property
    def anomalies(self) -> list[Anomaly]:
        return self.check.anomalies

    def table(self) -> str:
        c = self.config
        lines = [
            f"wallet chaos: seed {c.seed}, {self.seconds:.0f} s, "
            + (
                "NAIVE two-update transfers"
                if c.naive
                else f"{c.coordinators} coordinators, {c.workers} clients, {c.proxied_shard} behind the proxy"
                + (", topology and leader election in ZooKeeper" if c.zookeeper else "")
                + (", every shard and the ledger a Patroni primary and synchronous standby" if c.ha else "")
            ),
            "",
            "| mode | tried | succeeded | failed | timed out, then resolved | unresolved |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for mode in (*MODES, "total"):

            def pick(counter: Counter[str], mode: str = mode) -> int:
                return sum(counter.values()) if mode == "total" else counter[mode]

            lines.append(
                f"| {mode} | {pick(self.tried):,} | {pick(self.succeeded):,} | {pick(self.failed):,} | "
                f"{pick(self.timed_out) - pick(self.unknown):,} | {pick(self.unknown):,} |"
            )
        lines += ["", "| fault | injected |", "|---|---:|"]
        lines += [f"| {kind} | {self.faults[kind]} |" for kind in c.kinds]
        points = len(self.points_reached) + len(self.points_missed)
        lines += [
            "",
            f"fault points reached: {len(set(self.points_reached))} distinct of {len(c.fault_points)}, "
            f"{len(self.points_reached)}/{points} armings"
            + (f" (missed: {', '.join(self.points_missed)})" if self.points_missed else ""),
            f"periodic reads: {self.check.reads_checked} checked; largest cross-shard excess over deposits "
            f"{self.check.read_excess_max} minor units, every one explained by transfers caught half-seen",
            f"timed-out transfers (first answer unknown): {self.check.timed_out}; {self.check.timed_out_applied} "
            "applied exactly once, the rest not at all, each as its retry reported",
            f"anomalies: {len(self.anomalies)}",
        ]
        for kind, count in sorted(self.check.by_kind.items()):
            lines.append(f"  {kind}: {count}")
        for anomaly in self.check.examples():
            lines.append(f"    {anomaly.kind}: {anomaly.detail}")
        return "\n".join(lines)


class Run:
    def __init__(self, config: ChaosConfig, cluster: LocalCluster | HaCluster, workdir: Path) -> None:
        assert config.ha == isinstance(cluster, HaCluster), "an HA run needs an HA cluster, and only an HA run"

        self.config = config
        self.headers: Headers | None = config.headers  # set to a bearer token of the run if not given
        self.cluster = cluster
        self.workdir = workdir
        self.topology = cluster.topology  # direct addresses: the checker and the reads use these
        self.shards = sorted(self.topology.shards)
        prefix = f"chaos{config.seed}x{uuid.uuid4().hex[:6]}"
        self.by_shard = {s: self.topology.ids_on(s, config.accounts_per_shard, prefix) for s in self.shards}
        self.accounts = [a for s in self.shards for a in self.by_shard[s]]
        self.deposits: dict[uuid.UUID, tuple[str, int]] = {}
        self.history: list[TransferRecord] = []
        self.reads: list[Read] = []
        self.read_anomalies: list[Anomaly] = []
        self.report = ChaosReport(config, 0.0)
        self.coordinators: list[Coordinator] = []
        self.held: set[int] = set()  # coordinators the fault driver is keeping down
        self.proxies: list[FaultyProxy] = []  # one per server of the proxied shard
        self.paused: list[int] = []
        self.stopped_shards: set[str] = set()
        self.killed_members: list[Member] = []  # HA: standbys to start again when healing
        self.stopping = asyncio.Event()
        self.started = time.monotonic()
        self.transport: RestClient | NaiveTransfers | None = None

    def now_s(self) -> float:
        return time.monotonic() - self.started

    def say(self, text: str) -> None:
        self.config.say(f"[{self.now_s():6.1f}s] {text}")

    # -- the run ------------------------------------------------------------------------------
    async def execute(self) -> ChaosReport:
        await self.open_accounts()
        try:
            if self.config.naive:
                self.transport = await NaiveTransfers(self.topology, self.config.seed).open()
            else:
                await self.start_processes()
                self.transport = RestClient([c.url for c in self.coordinators], self.headers, self.config.seed)
            self.started = time.monotonic()
            await self.run_workload()
            if not self.config.naive:
                # Recovery first: a retry of a transfer whose 2PC branch is still prepared
                # waits on its row locks; once recovery has finished it, the retry answers
                # at once. The retries may apply transfers, so the relay converges again.
                await self.converge()
            await self.resolve_unknowns()
            if not self.config.naive:
                await self.converge()
        finally:
            await self.shutdown()
        self.report.seconds = self.now_s()
        self.report.check = await check_run(
            self.topology, self.accounts, self.deposits, self.history, self.reads, self.read_anomalies
        )
        self.tally()
        return self.report

    async def open_accounts(self) -> None:
        """Accounts and deposits, in-process: setting up is not what the run tests."""
        settings = Settings(home=self.workdir, topology_path=self.cluster.topology_path)
        async with WalletService(self.topology, settings) as service:
            for account in self.accounts:
                await service.create_account(account, account, CURRENCY)
                transaction_id = uuid.uuid4()
                result = await service.deposit(account, format_minor(DEPOSIT_MINOR), str(transaction_id))
                assert result.status == "success", f"deposit to {account} failed: {result}"
                self.deposits[transaction_id] = (account, DEPOSIT_MINOR)
            assert service.ledger is not None, "a chaos run needs the ledger"
            await service.ledger.drain()

    async def start_processes(self) -> None:
        addresses = dict(self.topology.shards)
        dsn = addresses[self.config.proxied_shard]
        if isinstance(self.cluster, HaCluster):  # every member behind a proxy of its own
            real_ports = [member.pg_port for member in self.cluster.clusters[self.config.proxied_shard]]
        else:
            real_ports = [self.cluster.server(self.config.proxied_shard).port]
        ports = []
        for real_port in real_ports:
            proxy = FaultyProxy("127.0.0.1", real_port)
            ports.append(await proxy.start())
            self.proxies.append(proxy)
        for real_port, port in zip(real_ports, ports, strict=True):
            dsn = dsn.replace(f"127.0.0.1:{real_port}", f"127.0.0.1:{port}")
        addresses[self.config.proxied_shard] = dsn
        proxied = self.workdir / "topology.json"
        FileTopologyStore(proxied).save(self.topology.with_shards(addresses))
        environment = dict(self.config.coordinator_env)
        if self.config.zookeeper:
            root = f"/wallet-chaos-{uuid.uuid4().hex[:12]}"
            store = ZooKeeperTopologyStore(
                connect_zookeeper(self.config.zookeeper, ZK_SESSION_TIMEOUT_MS), root, owns_client=True
            )
            try:
                await asyncio.to_thread(store.save, FileTopologyStore(proxied).load())
            finally:
                await asyncio.to_thread(store.close)
            environment.update(
                {
                    "WALLET_ZK_HOSTS": self.config.zookeeper,
                    "WALLET_ZK_ROOT": root,
                    "WALLET_ZK_SESSION_TIMEOUT_MS": str(ZK_SESSION_TIMEOUT_MS),
                }
            )
        if "WALLET_AUTH_SECRET" not in environment:  # the API needs tokens: a secret of this run's own
            environment["WALLET_AUTH_SECRET"] = secrets.token_urlsafe(48)
        if self.headers is None:
            token = issue_token(environment["WALLET_AUTH_SECRET"], "chaos", "admin")
            self.headers = lambda: {"Authorization": f"Bearer {token}"}
        for index in range(self.config.coordinators):
            coordinator = Coordinator(index, free_port(), proxied, self.workdir, environment)
            coordinator.start()
            self.coordinators.append(coordinator)
        for coordinator in self.coordinators:
            ready = await asyncio.to_thread(coordinator.wait_ready)
            assert ready, f"coordinator {coordinator.index} did not start: see {coordinator.log_path}"
        self.say(
            f"{len(self.coordinators)} coordinators up; {self.config.proxied_shard} behind proxy ports "
            f"{', '.join(map(str, ports))}"
        )

    async def run_workload(self) -> None:
        tasks = [asyncio.create_task(self.worker(i)) for i in range(self.config.workers)]
        tasks.append(asyncio.create_task(self.reader()))
        if not self.config.naive:
            tasks.append(asyncio.create_task(self.supervise()))
        try:
            if self.config.naive:
                await asyncio.sleep(self.config.seconds)
            else:
                await self.drive_faults()
        finally:
            self.stopping.set()
            await self.heal()
            await asyncio.gather(*tasks, return_exceptions=True)
        self.say(f"workload stopped: {len(self.history)} transfers tried")

    # -- the clients ----------------------------------------------------------------------------
    async def worker(self, index: int) -> None:
        rng = random.Random(f"{self.config.seed}-{index}")
        while not self.stopping.is_set():
            record = next_transfer(rng, self.shards, self.by_shard, self.now_s())
            self.history.append(record)
            await self.send(
                record,
                RetryPolicy(
                    attempts_max=1 + RETRIES_DURING_RUN, wait_s_max=RETRY_PAUSE_S, give_up=self.stopping.is_set
                ),
            )

    async def send(self, record: TransferRecord, policy: RetryPolicy) -> Answer:
        assert self.transport is not None
        return await self.transport.send(record, CURRENCY, policy)

    async def resolve_unknowns(self) -> None:
        assert self.transport is not None
        await workload.resolve_unknowns(self.transport, self.history, self.say)

    async def converge(self) -> None:
        await workload.converge(self.topology, self.accounts, self.history, self.say)

    # -- periodic reads -------------------------------------------------------------------------
    async def reader(self) -> None:
        deposited = len(self.accounts) * DEPOSIT_MINOR
        while not self.stopping.is_set():
            read = await self.read_once(deposited)
            if read is not None:
                self.reads.append(read)
            await asyncio.sleep(READ_INTERVAL_S)

    async def read_once(self, deposited: int) -> Read | None:
        """Every shard's run accounts, one statement per shard; None if a shard is down."""
        at_s = self.now_s()

        async def one(shard: str) -> list[asyncpg.Record]:
            connection = await asyncpg.connect(self.topology.shards[shard], timeout=READ_TIMEOUT_S)
            try:
                return await connection.fetch(LIVE, self.by_shard[shard], timeout=READ_TIMEOUT_S)
            finally:
                connection.terminate()

        try:
            read = await asyncio.wait_for(fan_out(self.shards, one), READ_TIMEOUT_S * 2)
        except TimeoutError:
            return None
        if read.errors:  # a shard down or paused: this read sees nothing
            return None
        accounts: dict[str, tuple[int, int, int]] = {}
        for shard, rows in read.results.items():
            # Sound on each shard alone: one statement is one snapshot.
            for row in rows:
                accounts[row["account_id"]] = (row["balance"], row["reserved"], row["version"])
                if row["balance"] < 0 or not 0 <= row["reserved"] <= row["balance"]:
                    self.read_anomalies.append(
                        Anomaly(
                            "read_invariant",
                            f"read at {at_s:.1f}s: {row['account_id']} "
                            f"balance {row['balance']} reserved {row['reserved']}",
                        )
                    )
            if sum(row["balance"] for row in rows) > deposited:
                self.read_anomalies.append(
                    Anomaly(
                        "read_saw_money_created", f"read at {at_s:.1f}s: {shard} alone holds more than every deposit"
                    )
                )
        return Read(at_s, accounts)

    # -- faults ---------------------------------------------------------------------------------
    def build_schedule(self) -> list[faults.Fault]:
        c = self.config
        # Sized for more than the run (the cost of a fault is only estimated); the deadline
        # cuts it, so faults keep coming until the workload stops.
        return faults.build_schedule(
            c.seed,
            self.shards,
            c.proxied_shard,
            c.coordinators,
            list(c.fault_points),
            None if c.cover_only else c.seconds * SCHEDULE_SLACK,
            c.hold_scale,
            c.kinds,
        )

    async def drive_faults(self) -> None:
        plan = self.build_schedule()
        deadline = None if self.config.cover_only else self.config.seconds
        await asyncio.sleep(faults.GAP_S[0])
        for fault in plan:
            if deadline is not None and self.now_s() >= deadline:
                break
            self.say(fault.describe())
            await self.inject(fault)
            self.report.faults[fault.kind] += 1
            await self.heal()
            await asyncio.sleep(fault.gap_s)
        if self.config.cover_only:
            await self.rearm_missed()
        if deadline is not None and self.now_s() < deadline:
            await asyncio.sleep(deadline - self.now_s())

    async def rearm_missed(self) -> None:
        """Arm again, a bounded number of times, each point no arming has reached yet."""
        for attempt in range(COVER_REARMS_MAX):
            missed = sorted(set(self.config.fault_points) - set(self.report.points_reached))
            if not missed:
                return
            for number, point in enumerate(missed):
                coordinator = self.coordinators[(attempt + number) % len(self.coordinators)]
                self.say(f"fault_point {point} armed again on coordinator {coordinator.index}")
                await self.kill_at_fault_point(coordinator, point)
                self.report.faults[faults.FAULT_POINT] += 1
                await self.heal()
                await asyncio.sleep(faults.GAP_S[0])

    async def inject(self, fault: faults.Fault) -> None:
        assert self.proxies
        if fault.kind == faults.COORDINATOR_KILL:
            coordinator = self.coordinators[fault.coordinator]
            self.held.add(coordinator.index)
            coordinator.kill()
            await asyncio.sleep(fault.hold_s)
            self.held.discard(coordinator.index)
            await self.restart(coordinator)
        elif fault.kind == faults.FAULT_POINT:
            await self.kill_at_fault_point(self.coordinators[fault.coordinator], fault.target)
        elif fault.kind == faults.PRIMARY_KILL:
            ha = self.ha_cluster()
            primary = await asyncio.to_thread(ha.wait_healthy, fault.target)
            await asyncio.to_thread(ha.kill_postmaster, primary)
            await asyncio.sleep(fault.hold_s)
            new = await asyncio.to_thread(ha.wait_new_leader, fault.target, primary)
            self.say(f"{fault.target}: {new.name} took over from {primary.name}")
        elif fault.kind == faults.STANDBY_KILL:
            ha = self.ha_cluster()
            await asyncio.to_thread(ha.wait_healthy, fault.target)
            standby = ha.sync_standby(fault.target)
            if standby is not None:
                await asyncio.to_thread(ha.kill_member, standby)
                self.killed_members.append(standby)
            await asyncio.sleep(fault.hold_s)
        elif fault.kind == faults.SHARD_KILL:
            assert isinstance(self.cluster, LocalCluster), "an HA run kills members, not shards"
            self.stopped_shards.add(fault.target)
            await asyncio.to_thread(self.cluster.stop_shard, fault.target, "immediate")
            await asyncio.sleep(fault.hold_s)
            await asyncio.to_thread(self.cluster.start_shard, fault.target)
            self.stopped_shards.discard(fault.target)
        elif fault.kind == faults.SHARD_PAUSE:
            assert isinstance(self.cluster, LocalCluster), "an HA run kills members, not shards"
            self.paused = pause_shard(self.cluster, fault.target)
            await asyncio.sleep(fault.hold_s)
            resume_shard(self.paused)
            self.paused = []
        elif fault.kind == faults.PROXY_DELAY:
            for proxy in self.proxies:
                proxy.delay(fault.delay_ms)
            await asyncio.sleep(fault.hold_s)
        elif fault.kind == faults.PROXY_DROP:
            for proxy in self.proxies:
                proxy.drop()
            await asyncio.sleep(fault.hold_s)
        elif fault.kind == faults.PROXY_CUT:
            for proxy in self.proxies:
                await proxy.cut()
            await asyncio.sleep(fault.hold_s)
        else:
            raise AssertionError(f"no injector for {fault.kind}")

    async def kill_at_fault_point(self, coordinator: Coordinator, point: str) -> None:
        """Restart the coordinator armed at `point`; it SIGKILLs itself when a request (or its
        relay) reaches that step under the ordinary load."""
        # Only one relay works at a time (elected: in ZooKeeper, or by a lock file in the shared
        # home): a relay step is reached by arming a coordinator while the others are down (its
        # relay leads once their sessions expire, or at once for the lock file).
        others = [c for c in self.coordinators if c is not coordinator] if point.startswith("relay.") else []
        self.held.update(c.index for c in [coordinator, *others])
        try:
            for other in others:
                other.kill()
            coordinator.kill()
            coordinator.start(fault_point=point)
            deadline = time.monotonic() + FAULT_POINT_WAIT_S
            relay = point.startswith("relay.")
            while coordinator.alive() and time.monotonic() < deadline:
                if relay and coordinator.relay_killed_itself():
                    break
                await asyncio.sleep(0.1)
            if coordinator.relay_killed_itself() if relay else coordinator.killed_itself():
                self.report.points_reached.append(point)
                self.say(
                    f"fault point {point} reached after {FAULT_POINT_WAIT_S - (deadline - time.monotonic()):.1f} s"
                )
                coordinator.kill()  # a relay step killed only its relay process: restart disarmed
            else:
                self.report.points_missed.append(point)
                self.say(f"fault point {point} not reached within {FAULT_POINT_WAIT_S:.0f} s")
                coordinator.kill()
        finally:
            self.held.difference_update(c.index for c in [coordinator, *others])
        for restarted in [coordinator, *others]:
            await self.restart(restarted)

    async def restart(self, coordinator: Coordinator) -> None:
        if not coordinator.alive():
            coordinator.start()
        await asyncio.to_thread(coordinator.wait_ready)

    async def supervise(self) -> None:
        """A coordinator that died outside a fault (it could not open a pool while a shard
        was down, say) is started again, as a process manager would."""
        while not self.stopping.is_set():
            for coordinator in self.coordinators:
                if coordinator.index not in self.held and not coordinator.alive():
                    coordinator.start()
            await asyncio.sleep(SUPERVISE_INTERVAL_S)

    async def heal(self) -> None:
        """Undo every fault still in place (idempotent)."""
        if self.paused:
            resume_shard(self.paused)
            self.paused = []
        for shard in sorted(self.stopped_shards):
            assert isinstance(self.cluster, LocalCluster)
            await asyncio.to_thread(self.cluster.start_shard, shard)
        self.stopped_shards.clear()
        if isinstance(self.cluster, HaCluster):
            for member in self.killed_members:
                await asyncio.to_thread(self.cluster.start_member, member)
            self.killed_members.clear()
            for name in self.cluster.names:  # every cluster back to a primary and a synchronous standby
                await asyncio.to_thread(self.cluster.wait_healthy, name)
        for proxy in self.proxies:
            proxy.heal()
        for coordinator in self.coordinators:
            if coordinator.index not in self.held and not coordinator.alive():
                await self.restart(coordinator)

    async def shutdown(self) -> None:
        await self.heal()
        if self.transport is not None:
            await self.transport.close()
        for coordinator in self.coordinators:
            await asyncio.to_thread(coordinator.stop)
        for proxy in self.proxies:
            await proxy.stop()

    def ha_cluster(self) -> HaCluster:
        assert isinstance(self.cluster, HaCluster), "member faults need HA shards (wallet chaos --ha)"
        return self.cluster

    def tally(self) -> None:
        for record in self.history:
            self.report.tried[record.mode] += 1
            final = record.final
            if final is None:
                self.report.unknown[record.mode] += 1
            elif final.outcome == "success":
                self.report.succeeded[record.mode] += 1
            else:
                self.report.failed[record.mode] += 1
            if record.timed_out:
                self.report.timed_out[record.mode] += 1
        self.report.reads = len(self.reads)


async def run_chaos(config: ChaosConfig, cluster: LocalCluster | HaCluster, keep_workdir: bool = False) -> ChaosReport:
    """One run on a started, migrated cluster (its shards are killed and paused on the way
    and are all running again at the end)."""
    workdir = Path(tempfile.mkdtemp(prefix="wallet-chaos-run-"))
    try:
        return await Run(config, cluster, workdir).execute()
    finally:
        if keep_workdir:
            config.say(f"coordinator logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def start_cluster(home: Path, shards: int, ha: bool = False) -> LocalCluster | HaCluster:
    from shards import migrate

    cluster: LocalCluster | HaCluster = (
        HaCluster(home, shard_count=shards, members=2) if ha else LocalCluster(home, shard_count=shards)
    )
    topology = cluster.start()
    assert topology.ledgers
    migrate.upgrade_all(topology)
    return cluster


def parse_pairs(items: list[str], separator: str, what: str) -> dict[str, str]:
    pairs = {}
    for item in items:
        key, found, value = item.partition(separator)
        if not found or not key.strip():
            raise SystemExit(f"{what} must look like KEY{separator}VALUE, got {item!r}")
        pairs[key.strip()] = value.strip()
    return pairs


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wallet chaos",
        description="Jepsen-style bank workload: concurrent transfers in every mode over REST while coordinators "
        "and shards are killed, paused and cut off; then a check of the bank invariant.",
    )
    parser.add_argument("--minutes", type=float, default=1.0, help="length of the workload (default 1)")
    parser.add_argument("--seed", type=int, default=1, help="seeds the workload and the fault schedule (default 1)")
    parser.add_argument("--coordinators", type=int, default=2, help="coordinator processes (default 2)")
    parser.add_argument("--workers", type=int, default=8, help="concurrent clients (default 8)")
    parser.add_argument("--shards", type=int, default=4, help="shards of the throwaway cluster (default 4)")
    parser.add_argument(
        "--header",
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        help="an HTTP header on every request, e.g. 'Authorization: Bearer TOKEN' (repeatable)",
    )
    parser.add_argument(
        "--coordinator-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an environment variable for the coordinator processes (repeatable)",
    )
    parser.add_argument(
        "--naive",
        action="store_true",
        help="use the deliberately broken two-update transfer instead of the service, "
        "to see the checker fail (exit 1 expected)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the coordinators' logs")
    parser.add_argument(
        "--zookeeper",
        action="store_true",
        help="start a ZooKeeper for the run: topology and leader election through it",
    )
    parser.add_argument(
        "--ha",
        action="store_true",
        help="every shard and the ledger a Patroni primary with a synchronous standby (on a ZooKeeper "
        "of the run's); primary_kill and standby_kill replace shard_kill and shard_pause",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    headers = parse_pairs(args.header, ":", "--header")
    config = ChaosConfig(
        seconds=args.minutes * 60,
        seed=args.seed,
        coordinators=args.coordinators,
        workers=args.workers,
        naive=args.naive,
        coordinator_env=parse_pairs(args.coordinator_env, "=", "--coordinator-env"),
        headers=(lambda: dict(headers)) if headers else None,
        ha=args.ha,
    )
    logging.basicConfig(level=logging.WARNING)
    home = temporary_home("chaos")
    zookeeper = LocalZooKeeper(home / "zookeeper") if args.zookeeper and not args.ha else None
    cluster = start_cluster(home, args.shards, args.ha)
    try:
        if zookeeper is not None:
            config.zookeeper = zookeeper.start()
        elif args.zookeeper and isinstance(cluster, HaCluster):
            config.zookeeper = cluster.zk_hosts  # Patroni's ensemble is the topology's too
        report = asyncio.run(run_chaos(config, cluster, keep_workdir=args.keep))
    finally:
        with contextlib.suppress(Exception):
            cluster.stop()
        if zookeeper is not None:
            zookeeper.stop()
        shutil.rmtree(home, ignore_errors=True)
    print(report.table())
    return 1 if report.anomalies else 0


if __name__ == "__main__":
    raise SystemExit(main())
