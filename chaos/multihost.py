"""`wallet chaos multihost`: docker/compose.yaml's deployment run for real, without containers,
and the bank workload across it while a coordinator and then a shard's primary are cut off
the network.

Each compose service (every ZooKeeper node, every Patroni member, `migrate`, the coordinator
replicas, the relay, `metrics-token`, Prometheus, HAProxy; not Grafana, which nothing here
can install) runs natively in a network namespace of its compose hostname,
with the compose file's ports and environment (launchers/compose.py translates the rest,
launchers/multihost.py starts it); the namespaces are hosts of one private star network
(launchers/netns.py), torn down at the end. The workload and the checker run in one more
namespace on it (`wallet-client`), as a client of the balancer; nothing reaches anything
outside the run's network.

Phases, each a bounded load of transfers in every mode (bounded in count per client and in
time), then the run waits until recovery and the relay have left nothing behind, retries
every transfer whose outcome it did not learn, and runs the checker (chaos/checker.py) over
everything so far:
  1. healthy load;
  2. the coordinator that leads recovery cut off (its veth down), past its ZooKeeper
     session, so the other takes over; then restored;
  3. a shard's primary cut off: its standby is promoted; restored, it rejoins as standby.
At the end, what the compose file's Prometheus saw: its scrape targets, and every alert of
docker/prometheus/rules.yml that went pending or fired.

The whole compose file (3 ZooKeeper JVMs, 12 Patroni members, 2 coordinators, the relay,
Prometheus, HAProxy) fits the 2-core development machine and is the default; `--scale reduced` keeps one
ZooKeeper and the shard0, shard1 and ledger pairs (launchers/compose.py), for a smaller machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import random
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn, cast

from chaos.checker import CheckReport, check_run
from chaos.client import RestClient
from chaos.history import TransferRecord, format_minor
from chaos.workload import CURRENCY, DEPOSIT_MINOR, converge, next_transfer, resolve_unknowns
from coordinator.api.auth import issue_token
from core.domain.errors import ConfigurationError
from launchers.compose import SCALES, Plan, Scale, read_plan
from launchers.multihost import Deployment
from launchers.netns import SUBNET, SWITCH, StarNetwork
from launchers.postgres import temporary_home
from shard_router.stores import connect_zookeeper
from wallet_client import RetryPolicy, WalletClient

log = logging.getLogger("wallet.chaos.multihost")

CLIENT = "wallet-client"  # the namespace of the workload and the checker
WORKERS_MAX = 64
TRANSFERS_PER_CLIENT_MAX = 5_000  # per client and phase: the load's bound in count
PHASE_S_MAX = 600.0  # the load's bound in time, whatever a fault waits for
RETRIES_DURING_LOAD = 2
RETRY_PAUSE_S = 0.5
LEAD_S = 5.0  # load before a fault
TAIL_S = 10.0  # load after a fault is healed
COORDINATOR_CUT_S = 20.0  # past the coordinators' ZooKeeper session (10 s): leadership moves
PRIMARY_CUT_AFTER_S = 5.0  # a cut primary stays cut this long after its standby took over
TAKEOVER_TIMEOUT_S = 90.0
POLL_S = 0.5
RUN_TIMEOUT_S = 3_600.0  # the whole run, from outside
INNER_STOP_S = 120.0  # after Ctrl-C: the inside stops its services, then the network goes
UNKNOWN_CODES_SHOWN = 4
ERROR_LINE_SHOWN_MAX = 400
LEADER_ROLE_PATH = "leaders/singletons"  # under WALLET_ZK_ROOT: the recovery worker's election
ALERTS_SEEN = "max by (alertname, alertstate) (ALERTS)"
PROMETHEUS_TIMEOUT_S = 10.0
EXIT_USAGE = 2  # a setting or an argument that cannot be used, as argparse exits
EXIT_INTERRUPTED = 130  # as a shell reports Ctrl-C


@dataclass
class MultihostConfig:
    scale: Scale = "full"
    seconds: float = 20.0  # the healthy phase's load
    seed: int = 1
    workers: int = 8
    accounts_per_shard: int = 6
    say: Callable[[str], None] = print

    def __post_init__(self) -> None:
        if self.scale not in SCALES:
            raise ConfigurationError(f"--scale must be one of {', '.join(SCALES)}, got {self.scale!r}")
        if not 0 < self.seconds <= PHASE_S_MAX:
            raise ConfigurationError(f"--seconds must be in (0, {PHASE_S_MAX:.0f}], got {self.seconds}")
        if not 1 <= self.workers <= WORKERS_MAX:
            raise ConfigurationError(f"--workers must be in 1..{WORKERS_MAX}, got {self.workers}")


@dataclass(frozen=True)
class Fault:
    """What a phase did to the deployment, as the table says it."""

    description: str
    cut_shard: str | None = None  # a shard left without its primary for a while


@dataclass
class PhaseReport:
    name: str
    fault: Fault
    load_s: float
    settle_s: float  # converging, resolving unknown outcomes, checking
    records: list[TransferRecord]
    check: CheckReport

    def count(self, outcome: str | None) -> int:
        return sum(1 for r in self.records if (r.final.outcome if r.final else None) == outcome)


@dataclass
class MultihostReport:
    config: MultihostConfig
    startup_s: float = 0.0
    phases: list[PhaseReport] = field(default_factory=list)
    errors_logged: dict[str, list[str]] = field(default_factory=dict)  # service -> its error lines
    monitoring: str | None = None  # what the compose file's Prometheus saw, when it runs

    @property
    def clean(self) -> bool:
        return bool(self.phases) and all(not phase.check.anomalies for phase in self.phases)

    def table(self, plan: Plan, network: StarNetwork) -> str:
        lines = [
            f"wallet chaos multihost: docker/compose.yaml at the {plan.scale} scale, natively, one network "
            f"namespace per service on {network.subnet} (bridge in namespace {SWITCH}); "
            f"{self.config.workers} clients through the balancer; seed {self.config.seed}",
            "",
            *self.service_rows(plan, network),
            "",
            f"startup, every service in compose's order: {self.startup_s:.0f} s"
            + (f"; left out: {'; '.join(f'{n} ({why})' for n, why in plan.left_out.items())}" if plan.left_out else ""),
            "",
            *self.phase_rows(),
            "",
            *self.notes(plan),
        ]
        return "\n".join(lines)

    @staticmethod
    def service_rows(plan: Plan, network: StarNetwork) -> list[str]:
        rows = ["| service | kind | namespace | address | ports |", "|---|---|---|---|---|"]
        for service in plan.services:
            ports = ", ".join(map(str, service.ports)) or "-"
            kind = f"patroni ({service.cluster})" if service.kind == "member" else service.kind
            rows.append(f"| {service.name} | {kind} | {service.name} | {network.addresses[service.name]} | {ports} |")
        rows.append(f"| (workload, checker) | client | {CLIENT} | {network.addresses[CLIENT]} | - |")
        return rows

    def phase_rows(self) -> list[str]:
        rows = [
            "| phase | fault | load s | tried | acknowledged | refused | first answer unknown | unresolved "
            "| settle s | checker |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
        for phase in self.phases:
            unknown_first = sum(1 for r in phase.records if r.timed_out)
            anomalies = phase.check.by_kind
            verdict = "clean" if not anomalies else ", ".join(f"{kind} {count}" for kind, count in anomalies.items())
            rows.append(
                f"| {phase.name} | {phase.fault.description} | {phase.load_s:.0f} | {len(phase.records):,} | "
                f"{phase.count('success'):,} | {phase.count('failed'):,} | {unknown_first:,} | "
                f"{phase.count(None):,} | {phase.settle_s:.0f} | {verdict} |"
            )
        return rows

    def notes(self, plan: Plan) -> list[str]:
        """What the unknown answers were, the checker's summary, the services' error lines."""
        lines = []
        for phase in self.phases:
            if phase.fault.cut_shard is not None:
                others = [r for r in phase.records if phase.fault.cut_shard not in shards_of(plan, r)]
                lines.append(
                    f"{phase.name}: transfers that touch no account of {phase.fault.cut_shard}: {len(others):,}, "
                    f"of which {sum(1 for r in others if r.timed_out):,} had an unknown first answer"
                )
            codes = Counter(a.code for r in phase.records for a in r.answers if not a.definite)
            if codes:
                shown = ", ".join(f"{code} {count:,}" for code, count in codes.most_common(UNKNOWN_CODES_SHOWN))
                lines.append(f"{phase.name}: answers that left the outcome unknown, by code: {shown}")
        last = self.phases[-1].check if self.phases else CheckReport()
        lines += [
            "",
            "checker (after each phase, over every transfer so far): money conserved, every acknowledged transfer "
            "in the balances and the ledger once, nothing prepared, held or unfinished, outbox relayed, "
            f"replay equals balances; timed-out transfers {last.timed_out}, of which applied {last.timed_out_applied}",
            f"anomalies: {len(last.anomalies)}",
            "errors in the wallet services' logs: "
            + (", ".join(f"{name} {len(found)}" for name, found in self.errors_logged.items()) or "none"),
        ]
        lines += [f"    {name}: {found[0][:ERROR_LINE_SHOWN_MAX]}" for name, found in self.errors_logged.items()]
        if self.monitoring is not None:
            lines.append(self.monitoring)
        lines += [f"    {anomaly.kind}: {anomaly.detail}" for anomaly in last.examples()]
        return lines


def prometheus_get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=PROMETHEUS_TIMEOUT_S) as answer:
        return json.loads(answer.read())["data"]


def shards_of(plan: Plan, record: TransferRecord) -> set[str]:
    return {plan.topology.shard_of(record.from_account), plan.topology.shard_of(record.to_account)}


class MultihostRun:
    """The workload, the faults and the checks, from the client's namespace."""

    def __init__(self, config: MultihostConfig, deployment: Deployment, secret: str) -> None:
        self.config = config
        self.deployment = deployment
        self.plan = deployment.plan
        self.topology = self.plan.topology
        self.shards = sorted(self.topology.shards)
        prefix = f"mh{config.seed}x{uuid.uuid4().hex[:6]}"
        self.by_shard = {s: self.topology.ids_on(s, config.accounts_per_shard, prefix) for s in self.shards}
        self.accounts = [a for s in self.shards for a in self.by_shard[s]]
        self.deposits: dict[uuid.UUID, tuple[str, int]] = {}
        self.history: list[TransferRecord] = []
        token = issue_token(secret, "multihost", "admin")
        self.headers = {"Authorization": f"Bearer {token}"}
        balancer = self.plan.of_kind("balancer")[0]
        self.url = f"http://{balancer.name}:{balancer.ports[0]}"
        self.client = RestClient([self.url], lambda: dict(self.headers), config.seed)
        self.report = MultihostReport(config)
        self.started = time.monotonic()
        self.zookeeper: Any = None  # a KazooClient: who leads recovery

    def say(self, text: str) -> None:
        self.config.say(f"[{time.monotonic() - self.started:6.1f}s] {text}")

    async def execute(self) -> MultihostReport:
        started_at = time.time()
        self.zookeeper = await asyncio.to_thread(connect_zookeeper, self.plan.zookeeper_hosts)
        try:
            await self.open_accounts()
            await self.phase("healthy load", None)
            await self.phase("coordinator cut", self.cut_coordinator)
            await self.phase("shard-primary cut", self.cut_primary)
            if self.plan.of_kind("prometheus"):
                self.report.monitoring = await asyncio.to_thread(self.prometheus_saw, started_at)
        finally:
            self.deployment.interrupted.set()  # a wait still running in a thread (cancelled: Ctrl-C) ends
            await self.client.close()
            await asyncio.to_thread(self.zookeeper.stop)
            await asyncio.to_thread(self.zookeeper.close)
        return self.report

    async def open_accounts(self) -> None:
        """Accounts and deposits over REST, through the balancer; every deposit definite."""
        async with WalletClient(self.url, headers=lambda: dict(self.headers), seed=self.config.seed) as client:
            for account in self.accounts:
                await client.create_account(account, account, CURRENCY)
                transaction_id = uuid.uuid4()
                result = await client.deposit(account, format_minor(DEPOSIT_MINOR), CURRENCY, str(transaction_id))
                assert result.status == "success", f"deposit to {account} failed: {result}"
                self.deposits[transaction_id] = (account, DEPOSIT_MINOR)
        self.say(f"{len(self.accounts)} accounts opened and funded on {', '.join(self.shards)}")

    async def phase(self, name: str, fault: Callable[[], Awaitable[Fault]] | None) -> None:
        first = len(self.history)
        stopping = asyncio.Event()
        deadline = time.monotonic() + PHASE_S_MAX
        started = time.monotonic()
        self.say(f"phase: {name}")
        clients = [asyncio.create_task(self.load(index, stopping, deadline)) for index in range(self.config.workers)]
        try:
            if fault is None:
                await asyncio.sleep(self.config.seconds)
                described = Fault("none")
            else:
                described = await fault()
        finally:
            stopping.set()
            await asyncio.gather(*clients, return_exceptions=True)
        load_s = time.monotonic() - started
        self.say(f"{name}: {len(self.history) - first} transfers tried; settling")
        await converge(self.topology, self.accounts, self.history, self.say)
        await resolve_unknowns(self.client, self.history, self.say)
        await converge(self.topology, self.accounts, self.history, self.say)
        check = await check_run(self.topology, self.accounts, self.deposits, self.history, [], [])
        self.say(f"{name}: checker found {len(check.anomalies)} anomalies")
        settle_s = time.monotonic() - started - load_s
        self.report.phases.append(PhaseReport(name, described, load_s, settle_s, self.history[first:], check))

    async def load(self, index: int, stopping: asyncio.Event, deadline: float) -> None:
        """One client: transfers one after another, bounded in count and time."""
        rng = random.Random(f"{self.config.seed}-{len(self.report.phases)}-{index}")
        for _ in range(TRANSFERS_PER_CLIENT_MAX):
            if stopping.is_set() or time.monotonic() >= deadline:
                return
            record = next_transfer(rng, self.shards, self.by_shard, time.monotonic() - self.started)
            self.history.append(record)
            policy = RetryPolicy(
                attempts_max=1 + RETRIES_DURING_LOAD, wait_s_max=RETRY_PAUSE_S, give_up=stopping.is_set
            )
            await self.client.send(record, CURRENCY, policy)

    # -- faults ------------------------------------------------------------------------------
    async def cut_coordinator(self) -> Fault:
        """The coordinator leading recovery loses the network past its ZooKeeper session."""
        await asyncio.sleep(LEAD_S)
        leader = await asyncio.to_thread(self.recovery_leader) or self.plan.of_kind("coordinator")[0].name
        self.say(f"cutting {leader} (it leads recovery) off the network for {COORDINATOR_CUT_S:.0f} s")
        self.deployment.network.cut(leader)
        cut_at = time.monotonic()
        handed_over = None
        try:
            while time.monotonic() - cut_at < COORDINATOR_CUT_S:
                await asyncio.sleep(POLL_S)
                if handed_over is None and await asyncio.to_thread(self.recovery_leader) not in (None, leader):
                    handed_over = time.monotonic() - cut_at
                    self.say(f"recovery leadership moved after {handed_over:.1f} s")
        finally:
            self.deployment.network.restore(leader)
        await asyncio.to_thread(self.deployment.wait, f"{leader} ready again", lambda: self.deployment.ready(leader))
        back = time.monotonic() - cut_at
        await asyncio.sleep(TAIL_S)
        moved = f"the other led recovery after {handed_over:.0f} s" if handed_over else "leadership did not move"
        return Fault(f"{leader} (recovery leader) cut {COORDINATOR_CUT_S:.0f} s; {moved}; ready again at {back:.0f} s")

    async def cut_primary(self) -> Fault:
        """A shard's primary loses the network; its standby takes over; back, it rejoins."""
        shard = self.shards[0]
        await asyncio.sleep(LEAD_S)
        primary = await asyncio.to_thread(
            self.deployment.wait, f"{shard} healthy", lambda: self.deployment.healthy(shard)
        )
        self.say(f"cutting {primary} ({shard}'s primary) off the network")
        self.deployment.network.cut(primary)
        cut_at = time.monotonic()
        try:
            new = await asyncio.to_thread(
                self.deployment.wait,
                f"{shard}: a new leader",
                lambda: next((m for m in [self.deployment.leader(shard)] if m not in (None, primary)), None),
                TAKEOVER_TIMEOUT_S,
            )
            promoted = time.monotonic() - cut_at
            self.say(f"{new} took over {shard} after {promoted:.1f} s")
            await asyncio.sleep(PRIMARY_CUT_AFTER_S)
        finally:
            self.deployment.network.restore(primary)
        held = time.monotonic() - cut_at
        await asyncio.to_thread(self.deployment.wait, f"{shard} healthy again", lambda: self.deployment.healthy(shard))
        rejoined = time.monotonic() - cut_at
        self.say(f"{primary} rejoined {shard} as its synchronous standby after {rejoined:.1f} s")
        await asyncio.sleep(TAIL_S)
        return Fault(
            f"{primary} ({shard}'s primary) cut {held:.0f} s; {new} promoted after {promoted:.0f} s; "
            f"{primary} back as synchronous standby at {rejoined:.0f} s",
            shard,
        )

    def prometheus_saw(self, since: float) -> str:
        """Prometheus (the compose file's, scraping the coordinators with the metrics token):
        which targets are up now, and every alert pending or firing since `since`."""
        service = self.plan.of_kind("prometheus")[0]
        base = f"http://{service.name}:{service.ports[0]}/api/v1"
        targets = prometheus_get(f"{base}/targets")["activeTargets"]
        up = sorted(target["labels"]["instance"] for target in targets if target["health"] == "up")
        window = {"query": ALERTS_SEEN, "start": f"{since:.3f}", "end": f"{time.time():.3f}", "step": "5"}
        seen: dict[str, set[str]] = {}
        for series in prometheus_get(f"{base}/query_range?{urllib.parse.urlencode(window)}")["result"]:
            seen.setdefault(series["metric"]["alertname"], set()).add(series["metric"]["alertstate"])
        alerts = ", ".join(f"{name} ({', '.join(sorted(states))})" for name, states in sorted(seen.items()))
        return (
            f"Prometheus: {len(up)} of {len(targets)} scrape targets up at the end ({', '.join(up)}); "
            f"alerts pending or firing during the run: {alerts or 'none'}"
        )

    def recovery_leader(self) -> str | None:
        """The hostname of the coordinator holding the recovery role (its lock's first contender)."""
        root = self.plan.of_kind("coordinator")[0].environment["WALLET_ZK_ROOT"]
        contenders = cast(list[str], self.zookeeper.Lock(f"{root}/{LEADER_ROLE_PATH}").contenders())
        return contenders[0].split(":")[0] if contenders else None


# -- the two processes: outside (the network) and inside (everything else) ----------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wallet chaos multihost",
        description="docker/compose.yaml run natively, each service in a network namespace of its compose hostname "
        "(needs root), with the bank workload across it while a coordinator and then a shard primary are cut off; "
        "the checker after each phase.",
    )
    parser.add_argument(
        "--scale",
        choices=SCALES,
        default="full",
        help="full (default): every compose service (3 ZooKeeper nodes, 12 Patroni members, 2 coordinators, "
        "the relay, HAProxy); reduced: one ZooKeeper, the shard0, shard1 and ledger pairs, every other service",
    )
    parser.add_argument("--seconds", type=float, default=20.0, help="the healthy phase's load (default 20)")
    parser.add_argument("--seed", type=int, default=1, help="seeds the workload (default 1)")
    parser.add_argument("--workers", type=int, default=8, help="concurrent clients (default 8)")
    parser.add_argument("--keep", action="store_true", help="keep the run's folder (every service's log)")
    parser.add_argument("--inside", help=argparse.SUPPRESS)  # the run's folder: this is the client's process
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    try:
        config = MultihostConfig(cast(Scale, args.scale), args.seconds, args.seed, args.workers)
        plan = read_plan(config.scale)
        network = StarNetwork([*plan.names, CLIENT], SUBNET)
        if args.inside:
            return inside(config, plan, network, Path(args.inside))
        return outside(plan, network, argv, args.keep)
    except ConfigurationError as error:
        print(f"wallet chaos multihost: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:  # everything was stopped and torn down on the way out
        print(f"wallet chaos multihost: interrupted ({'services stopped' if args.inside else 'torn down'})")
        return EXIT_INTERRUPTED


def outside(plan: Plan, network: StarNetwork, argv: list[str], keep: bool) -> int:
    """Build the network, run the rest in the client's namespace, tear it all down."""
    started = time.monotonic()
    home = temporary_home("multihost")
    inner: subprocess.Popen[bytes] | None = None

    def terminate(*_: Any) -> NoReturn:  # SIGTERM stops the run as Ctrl-C does: the inside first
        if inner is not None and inner.poll() is None:
            inner.send_signal(signal.SIGINT)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminate)
    code = 1
    try:
        network.create()
        print(f"network up: {len(network.addresses)} namespaces on {network.subnet}", flush=True)
        command = network.exec_command(CLIENT, [sys.executable, "-m", "chaos.multihost", *argv, "--inside", str(home)])
        inner = subprocess.Popen(command)
        try:
            code = inner.wait(RUN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            print(f"the run did not end within {RUN_TIMEOUT_S:.0f} s: stopping it", flush=True)
            inner.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                inner.wait(INNER_STOP_S)
        except KeyboardInterrupt:  # the inside got it too (or from `terminate`), and stops its services
            with contextlib.suppress(subprocess.TimeoutExpired, KeyboardInterrupt):
                inner.wait(INNER_STOP_S)
            raise
    finally:
        network.destroy()  # whatever still runs in the namespaces is killed here
        if keep:
            print(f"the run's folder (logs of every service): {home}")
        else:
            shutil.rmtree(home, ignore_errors=True)
        print(f"network, namespaces and processes torn down; the whole run took {time.monotonic() - started:.0f} s")
    return code


def inside(config: MultihostConfig, plan: Plan, network: StarNetwork, home: Path) -> int:
    """In the client's namespace: the services up, the phases, the table."""
    # Ctrl-C (or the outside's SIGINT) stops the services, even when started with SIGINT ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    secret = secrets.token_urlsafe(48)
    deployment = Deployment(plan, network, home, secret)
    started = time.monotonic()
    try:
        deployment.up(lambda text: config.say(f"[{time.monotonic() - started:6.1f}s] {text}"))
        startup_s = time.monotonic() - started
        report = asyncio.run(MultihostRun(config, deployment, secret).execute())
        report.startup_s = startup_s
        report.errors_logged = deployment.logged_errors()
    finally:
        deployment.stop_all()
    print(report.table(plan, network), flush=True)
    return 0 if report.clean else 1


if __name__ == "__main__":
    raise SystemExit(main())
