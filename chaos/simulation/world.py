"""The simulated world: the product's coordinators (submission, rounds and group commit, every
protocol, recovery, the relay: the real modules) over simulated shards and a simulated ledger,
on virtual time, every choice drawn from one seed.

  setup    accounts opened and funded by deposits through the coordinators (no faults)
  load     clients send transfers (every mode, some refused for funds), each retrying an
           unknown outcome with the same transaction id, sometimes to two coordinators at
           once; at each statement the seed may drop the connection before it, lose its
           answer after it (it landed), delay it (reordering it behind others: a Cancel can
           pass its Try), crash the shard (open transactions lost, prepared ones kept) or
           crash the coordinator whose statement it is (its tasks gone, its connections
           closed), restarting them later; the ledger may lose an append's answer
  settle   faults stop, everything down restarts, clients retry until they learn an outcome,
           recovery runs until nothing is prepared or unfinished, the relay drains
  check    chaos/checker.py's judge: money conserved, every acknowledged outcome durable,
           every retry's answer equal to the first definite one, nothing prepared, held or
           unfinished, each transaction applied once or not at all in the ledger; and the
           ledger's replay equal to the live balances, its chains verifying

Every fault and answer is written to the run's trace, with its virtual time.
"""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import random
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, cast
from uuid import UUID

from chaos.checker import Anomaly, compare_replay, judge
from chaos.checker import LedgerEvent as CheckedEvent
from chaos.history import FAILED, UNKNOWN, Answer, TransferRecord
from chaos.simulation.clock import Stalled, VirtualLoop
from chaos.simulation.ledger import SimulatedLedger, SimulatedLedgerServer
from chaos.simulation.shard import ConstraintViolated, Fault, SimulatedShard, SimulatedShards
from coordinator.protocols.one_shard import OneShard
from coordinator.protocols.recovery import Recovery
from coordinator.protocols.saga import SagaCoordinator
from coordinator.protocols.tcc import TccCoordinator
from coordinator.protocols.two_phase import TwoPhaseCommit
from coordinator.service.inflight import InFlight
from coordinator.service.record_lookup import RecordLookups
from coordinator.service.rounds import Rounds
from coordinator.service.routing import Router
from coordinator.service.submission import Submission
from core.domain.errors import WalletError
from core.domain.transfers import RequestMode, Transfer, TransferResult
from core.runtime import ids
from core.runtime.settings import BatchLimits
from ledger.chain import StreamVerifier
from ledger.relay import Relay
from shard_router.topology import Topology

FAULT_KINDS = ("drop", "lost_ack", "delay", "shard_crash", "coordinator_crash", "ledger", "duplicate")
NODE: contextvars.ContextVar[str] = contextvars.ContextVar("node", default="client")
CURRENCY = "USD"
LIMITS = BatchLimits(batch_size_max=8, queue_size_max=1000, workers=2)
ABORT_AFTER_MS = 1500  # recovery's patience here: short, so it races the coordinators
RECOVERY_INTERVAL_S = 2.0  # the product's default (coordinator/protocols/recovery.py)
RELAY_INTERVAL_S = 0.5
CLIENT_TIMEOUT_S = 6.0
CLIENT_ATTEMPTS_MAX = 40
LOAD_SECONDS_MAX = 60.0  # virtual: faults stop here at the latest
SETTLE_PASSES_MAX = 30
RUN_SECONDS_MAX = 900.0  # virtual: a run that has not settled by then is stuck
TRACE_LINES_MAX = 50_000
CLOSE_PASSES_MAX = 10
DEPOSIT = 1000


@dataclass(frozen=True)
class Options:
    seed: int
    shards: int = 3
    accounts: int = 6
    transfers: int = 24
    clients: int = 3
    coordinators: int = 2
    faults: frozenset[str] = frozenset(FAULT_KINDS)
    fault_rate: float = 0.04  # per statement
    mutant: str | None = None


@dataclass
class RunResult:
    seed: int
    anomalies: list[Anomaly]
    trace: list[str]
    statements: int = 0
    faults: int = 0
    virtual_s: float = 0.0
    transfers: int = 0
    succeeded: int = 0

    @property
    def ok(self) -> bool:
        return not self.anomalies


class Faults:
    """The seed's choices at each statement (chaos/simulation/shard.py asks before each)."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.enabled = False
        self.statements = 0
        self.injected = 0

    def before(self, shard: str, operation: str) -> tuple[Fault, float]:
        self.statements += 1
        world, rng = self.world, self.world.rng
        if not self.enabled:
            return None, 0.0
        roll = rng.random()
        if roll >= world.options.fault_rate:
            if roll > 0.7 and "delay" in world.options.faults:  # small jitter: interleavings vary
                return "delay", rng.uniform(0.0, 0.004)
            return None, 0.0
        kinds = [
            k for k in ("drop", "lost_ack", "delay", "shard_crash", "coordinator_crash") if k in world.options.faults
        ]
        if not kinds:
            return None, 0.0
        kind = rng.choice(kinds)
        node = NODE.get()
        self.injected += 1
        world.note(f"fault {kind} at {operation} on {shard} ({node})")
        if kind == "drop":
            return "drop_before", 0.0
        if kind == "lost_ack":
            return "drop_after", 0.0
        if kind == "delay":
            # Mostly short; one in four long enough for recovery to act meanwhile (a Cancel can pass its Try).
            return "delay", rng.uniform(0.05, 3.0) if rng.random() < 0.75 else rng.uniform(3.0, 8.0)
        if kind == "shard_crash":
            world.crash_shard(shard)
            return "drop_before", 0.0
        if node in world.nodes:
            world.crash_node(node)
        return "drop_before", 0.0

    def ledger(self, stream: str) -> str | None:
        """At an append's end: nothing, the append lost, or its answer lost."""
        if not self.enabled or "ledger" not in self.world.options.faults:
            return None
        if self.world.rng.random() >= self.world.options.fault_rate * 4:
            return None
        fault = self.world.rng.choice(["lost", "lost_ack"])
        self.injected += 1
        self.world.note(f"fault ledger {fault} (stream {stream})")
        return fault


class Coordinator:
    """One coordinator process: the service's parts over the world's shards; the leader also
    runs recovery and the relay."""

    def __init__(self, world: World, name: str, leader: bool) -> None:
        self.world, self.name, self.leader = world, name, leader
        self.shards = SimulatedShards(world.shards, owner=NODE.get)
        topology = lambda: world.topology  # noqa: E731
        self.records = RecordLookups(self.shards, lambda: world.topology.shards)
        self.two_phase = TwoPhaseCommit(self.shards, topology)
        self.tcc = TccCoordinator(self.shards, topology)
        self.saga = SagaCoordinator(self.shards, topology)
        self.rounds = Rounds(
            LIMITS,
            self.records,
            topology,
            OneShard(self.shards).apply_batch,
            {"2pc": self.two_phase.apply_batch, "tcc": self.tcc.apply_batch, "saga": self.saga.apply_batch},
        )
        self.submission = Submission(Router(world.topology, NoAddresses()), self.rounds, InFlight())
        self.recovery = Recovery(self.shards, lambda: sorted(world.topology.shards), [self.tcc, self.saga])
        self.relay = Relay(self.shards, world.ledger)
        self.alive = True

    def start(self) -> None:
        context = contextvars.copy_context()
        context.run(NODE.set, self.name)
        context.run(self._start)

    def _start(self) -> None:
        for shard in sorted(self.world.topology.shards):
            self.records.add_shard(shard)
        self.rounds.start()
        if self.leader:
            asyncio.ensure_future(self._every(RECOVERY_INTERVAL_S, self._recover))
            asyncio.ensure_future(self._every(RELAY_INTERVAL_S, self._relay))

    async def _every(self, interval_s: float, action: Callable[[], Coroutine[Any, Any, None]]) -> None:
        while True:
            await asyncio.sleep(interval_s)
            await action()

    async def _recover(self) -> None:
        try:
            report = await self.recovery.run_once(ABORT_AFTER_MS)
        except ConstraintViolated as error:
            self.world.bug("constraint_violated", f"recovery: {error}")
            return
        if report.committed or report.rolled_back or report.resumed:
            self.world.note(
                f"recovery: {report.committed} committed, {report.rolled_back} rolled back, {report.resumed} resumed"
            )

    async def _relay(self) -> None:
        try:
            moved = await self.relay.relay_once()
        except (ConstraintViolated, AssertionError) as error:
            self.world.bug("relay_failed", f"relay: {error!r}")
            return
        if moved:
            self.world.note(f"relay: {moved} events")


class NoAddresses:
    """The simulated topology never changes address."""

    async def set_address(self, name: str, dsn: str) -> None:
        raise AssertionError("the simulation does not move shards")


@dataclass
class World:
    options: Options
    rng: random.Random = field(init=False)
    loop: VirtualLoop = field(init=False)
    trace: list[str] = field(default_factory=list)
    bugs: list[Anomaly] = field(default_factory=list)
    nodes: dict[str, Coordinator] = field(default_factory=dict)
    tasks: dict[str, set[asyncio.Task[Any]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        options = self.options
        self.rng = random.Random(options.seed)
        self.loop = VirtualLoop()
        self.loop.set_task_factory(self._task)
        self.faults = Faults(self)
        names = [f"shard{i}" for i in range(options.shards)]
        self.topology = Topology.even(
            {name: f"postgresql://simulated/{name}" for name in names},
            ledgers={"ledger0": "postgresql://simulated/ledger0", "ledger1": "postgresql://simulated/ledger1"},
        )
        self.shards = {name: SimulatedShard(name, self.loop.time, self.faults) for name in names}
        self.ledger = SimulatedLedger(
            [
                SimulatedLedgerServer(name, server.streams, self.faults.ledger)
                for name, server in sorted(self.topology.ledgers.items())
            ]
        )

    # -- the trace -----------------------------------------------------------------------------
    def note(self, text: str) -> None:
        if len(self.trace) < TRACE_LINES_MAX:
            self.trace.append(f"{self.loop.time():9.3f}s {text}")

    def bug(self, kind: str, detail: str) -> None:
        self.note(f"BUG {kind}: {detail}")
        self.bugs.append(Anomaly(kind, detail))

    # -- tasks belong to the node that made them ------------------------------------------------
    def _task(
        self, loop: asyncio.AbstractEventLoop, coro: Any, context: contextvars.Context | None = None
    ) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.Task(coro, loop=loop, context=context)
        node = (context or contextvars.copy_context()).get(NODE, "client")
        owned = self.tasks.setdefault(node, set())
        owned.add(task)
        task.add_done_callback(owned.discard)
        return task

    # -- crashes ---------------------------------------------------------------------------------
    def crash_node(self, name: str) -> None:
        node = self.nodes[name]
        if not node.alive:
            return
        node.alive = False
        self.note(f"crash {name}")
        node.shards.end_sessions_of(name)
        for task in sorted(self.tasks.pop(name, set()), key=lambda t: t.get_name()):
            task.cancel()
        self.loop.call_later(self.rng.uniform(0.2, 3.0), self.restart_node, name)

    def restart_node(self, name: str) -> None:
        if self.nodes[name].alive:
            return
        self.note(f"restart {name}")
        node = self.nodes[name] = Coordinator(self, name, leader=self.nodes[name].leader)
        node.start()

    def crash_shard(self, name: str) -> None:
        shard = self.shards[name]
        if not shard.up:
            return
        self.note(f"crash {name}")
        shard.up = False
        shard.crash()
        self.loop.call_later(self.rng.uniform(0.1, 2.0), self.restart_shard, name)

    def restart_shard(self, name: str) -> None:
        if not self.shards[name].up:
            self.note(f"restart {name}")
            self.shards[name].restart()

    # -- the run ---------------------------------------------------------------------------------
    def run(self) -> RunResult:
        ids.draw_from(random.Random(self.rng.getrandbits(64)))
        state = random.getstate()
        random.seed(self.rng.getrandbits(64))  # tenacity's jitter draws from the module's generator
        try:
            return self.loop.run_until_complete(asyncio.wait_for(self._run(), RUN_SECONDS_MAX))
        except (Stalled, TimeoutError) as error:
            self.bug("stuck", f"the world did not settle: {error!r}")
            return RunResult(self.options.seed, list(self.bugs), self.trace, virtual_s=self.loop.time())
        finally:
            random.setstate(state)
            ids.draw_from(None)
            self._close()

    def _close(self) -> None:
        """Every task still running is cancelled and let finish, then the loop closes."""
        for _ in range(CLOSE_PASSES_MAX):
            pending = [task for task in asyncio.all_tasks(self.loop) if not task.done()]
            if not pending:
                break
            for task in pending:
                task.cancel()
            self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        self.loop.close()

    async def _run(self) -> RunResult:
        options = self.options
        for index in range(options.coordinators):
            name = f"coordinator{index}"
            self.nodes[name] = Coordinator(self, name, leader=index == 0)
            self.nodes[name].start()
        accounts = [f"acct-{index:03d}" for index in range(options.accounts)]
        deposits = await self._fund(accounts)
        history = self._workload(accounts)
        self.faults.enabled = True
        clients = [
            asyncio.ensure_future(self._client(history[index :: options.clients])) for index in range(options.clients)
        ]
        await asyncio.wait(clients, timeout=LOAD_SECONDS_MAX)
        self.faults.enabled = False
        self.note("faults stop")
        self._restart_everything()
        await asyncio.gather(*clients)
        await self._settle()
        return self._check(accounts, deposits, history)

    async def _fund(self, accounts: list[str]) -> dict[UUID, tuple[str, int]]:
        deposits: dict[UUID, tuple[str, int]] = {}
        for account in accounts:
            self.shards[self.topology.shard_of(account)].create_account(account, CURRENCY)
        node = self.nodes["coordinator0"]
        for account in accounts:
            transaction_id = self._uuid()
            transfer = Transfer(transaction_id, "deposit", None, account, DEPOSIT, CURRENCY, "local")
            result = await node.submission.submit(transfer)
            assert result.status == "success", f"the setup's deposit to {account} failed: {result}"
            deposits[UUID(transaction_id)] = (account, DEPOSIT)
        return deposits

    def _uuid(self) -> str:
        return str(UUID(int=self.rng.getrandbits(128), version=4))

    def _workload(self, accounts: list[str]) -> list[TransferRecord]:
        history = []
        for _ in range(self.options.transfers):
            source, target = self.rng.sample(accounts, 2)
            mode = self.rng.choice(["2pc", "tcc", "saga"])
            local = self.topology.shard_of(source) == self.topology.shard_of(target)
            amount = self.rng.choice([1, 5, 50, 200, 700])
            history.append(TransferRecord(self._uuid(), source, target, amount, "local" if local else mode, 0.0))
        return history

    async def _client(self, records: list[TransferRecord]) -> None:
        for record in records:
            await asyncio.sleep(self.rng.uniform(0.0, 0.3))
            await self._until_definite(record)

    async def _until_definite(self, record: TransferRecord) -> None:
        mode = cast(RequestMode, "2pc" if record.mode == "local" else record.mode)
        transfer = Transfer(
            record.transaction_id, "transfer", record.from_account, record.to_account, record.amount, CURRENCY, mode
        )
        calm = 0  # attempts since the faults stopped: only those are bounded
        for attempt in itertools.count():
            if not self.faults.enabled:
                calm += 1
                if calm > CLIENT_ATTEMPTS_MAX:
                    return
            names = sorted(name for name, node in self.nodes.items() if node.alive) or sorted(self.nodes)
            target = self.rng.choice(names)
            sends = [target]
            if self.faults.enabled and "duplicate" in self.options.faults and self.rng.random() < 0.1:
                sends.append(self.rng.choice(names))
                self.note(f"duplicate {record.transaction_id[:8]} to {sends}")
            answers = await asyncio.gather(*(self._send(name, transfer) for name in sends))
            for answer in answers:
                record.answers.append(answer)
                self.note(
                    f"client {record.transaction_id[:8]} {record.mode} {record.from_account}->{record.to_account} "
                    f"{record.amount}: {answer.outcome} {answer.code or ''}"
                )
            if any(answer.definite for answer in answers):
                return
            await asyncio.sleep(min(0.2 * (attempt + 1), 3.0))

    async def _send(self, name: str, transfer: Transfer) -> Answer:
        node = self.nodes[name]
        try:
            result: TransferResult = await asyncio.wait_for(node.submission.submit(transfer), CLIENT_TIMEOUT_S)
        except WalletError as error:
            outcome = FAILED if error.code == "idempotency_conflict" else UNKNOWN
            return Answer(outcome, error.code, self.loop.time())
        except (TimeoutError, asyncio.CancelledError):
            return Answer(UNKNOWN, "timeout", self.loop.time())
        except ConstraintViolated as error:
            self.bug("constraint_violated", str(error))
            return Answer(UNKNOWN, "constraint", self.loop.time())
        except Exception as error:  # a group failed: the node crashed under it, or a bug
            if not node.alive or "Cancelled" in repr(error):
                return Answer(UNKNOWN, "crashed", self.loop.time())
            self.bug("coordinator_error", repr(error))
            return Answer(UNKNOWN, type(error).__name__, self.loop.time())
        return Answer(result.status, result.error_code, self.loop.time())

    def _restart_everything(self) -> None:
        for name in sorted(self.shards):
            self.restart_shard(name)
        for name in sorted(self.nodes):
            self.restart_node(name)

    async def _settle(self) -> None:
        """Recovery and the relay, by a fresh process, until nothing is left to finish."""
        await asyncio.sleep(ABORT_AFTER_MS / 1000 * 2)
        leader = self.nodes["coordinator0"]
        for _ in range(SETTLE_PASSES_MAX):
            report = await leader.recovery.run_once(0)
            await leader.relay.drain()
            if report.clean and self._leftovers() == (0, 0, 0):
                return
            await asyncio.sleep(ABORT_AFTER_MS / 1000)

    def _leftovers(self) -> tuple[int, int, int]:
        prepared = sum(len(shard.prepared) for shard in self.shards.values())
        unfinished = sum(
            1 for shard in self.shards.values() for e in shard.phases.values() if e.row.second_state != "done"
        )
        pending = sum(len(shard.outbox) for shard in self.shards.values())
        return prepared, unfinished, pending

    def _check(
        self, accounts: list[str], deposits: dict[UUID, tuple[str, int]], history: list[TransferRecord]
    ) -> RunResult:
        live = {
            a.account_id: (a.balance, a.reserved, a.version)
            for shard in self.shards.values()
            for a in shard.accounts.values()
        }
        events = sorted(
            (
                event
                for server in self.ledger.servers.values()
                for stream in server.events.values()
                for event, _ in stream
            ),
            key=lambda e: (e.account_id, e.version),
        )
        checked = [
            CheckedEvent(
                UUID(e.transaction_id),
                e.account_id,
                e.version,
                e.amount,
                e.reserved_delta,
                e.balance_after,
                e.reserved_after,
            )
            for e in events
        ]
        report = judge(accounts, deposits, history, live, self._leftovers(), checked, self.bugs)
        replayed = {e.account_id: (e.balance_after, e.reserved_after, e.version) for e in events}  # the last wins
        compare_replay(report, live, replayed)
        for server in self.ledger.servers.values():
            for stream, stream_events in sorted(server.events.items()):
                verifier = StreamVerifier(stream)
                verifier.feed(event for event, _ in stream_events)
                for broken in verifier.breaks:
                    report.add("chain_broken", str(broken))
        for shard in self.shards.values():
            for late in shard.late_tries:
                report.add("late_try_admitted", f"{shard.name}: {late}")
        for anomaly in report.anomalies:
            self.note(f"ANOMALY {anomaly.kind}: {anomaly.detail}")
        return RunResult(
            self.options.seed,
            report.anomalies,
            self.trace,
            statements=self.faults.statements,
            faults=self.faults.injected,
            virtual_s=self.loop.time(),
            transfers=len(history),
            succeeded=sum(1 for r in history if r.final is not None and r.final.outcome == "success"),
        )


def simulate(options: Options) -> RunResult:
    """One seeded run, start to verdict."""
    return World(options).run()
