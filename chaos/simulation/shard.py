"""The simulated shard: the shard contract (shards/contract.py) in memory, for the simulator.

What it keeps of PostgreSQL is what the protocols depend on, and tests/test_shard_contract.py
holds it to PostgreSQL with the same suite:
- row locks (accounts, phase-state rows) and unique keys (records, barrier rows, phase-state
  rows, decisions) held by a transaction to its end; waits in arrival order, ended by the lock
  timeout (the session's 5 s, a transaction's own, the probe's 100 ms) as a retryable error;
  a unique key whose holder commits is a duplicate (retryable), free if it rolls back;
- a transaction's writes visible at its commit, all at once; a failed statement aborts the
  transaction (COMMIT of it rolls back);
- PREPARE moves the transaction off the session: it outlives the session and a crash of the
  shard, with its locks, until any session finishes it;
- a crash ends every session and rolls back every open transaction; prepared ones stay;
- now() is the transaction's start; outbox ids are given at insert.

Faults come from the world (chaos/simulation/world.py) through `Faults`: before a statement
the session may lose its connection (rolled back, ShardUnavailable), after it the answer
may be lost (it landed; ShardUnavailable), or the statement may be delayed.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable, Container, Hashable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Literal, Protocol

from core.domain.accounts import Account
from core.domain.postings import AccountChange, BalanceEvent
from core.domain.transfers import RecordColumns, Transfer, TransferResult
from shards.contract import RelayRow
from shards.errors import ShardRetryable, ShardUnavailable
from shards.phase_state import PhaseRow, PhaseUpdate
from shards.steps import BarrierRow, StepRead
from shards.transfers import PROBE_LOCK_TIMEOUT
from shards.two_phase import GID_PATTERN, PreparedBranch

SESSION_LOCK_TIMEOUT_S = 5.0  # shards/pool.py's lock_timeout
PROBE_LOCK_TIMEOUT_S = int(PROBE_LOCK_TIMEOUT.removesuffix("ms")) / 1000
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)  # virtual time 0
Key = tuple[str, ...]
Fault = Literal["drop_before", "drop_after", "delay"] | None


class ConstraintViolated(Exception):
    """A write PostgreSQL's checks would refuse (a negative balance, a hold above the balance):
    never retried, a bug in whatever planned it."""


class Faults(Protocol):
    def before(self, shard: str, operation: str) -> tuple[Fault, float]:
        """What happens to this statement: nothing, a lost connection before or after it, or a delay (seconds)."""


class NoFaults:
    def before(self, shard: str, operation: str) -> tuple[Fault, float]:
        return None, 0.0


def moment(at: datetime) -> str:
    """created_at as the chain writes it (ledger/chain.py; PostgreSQL's to_char in shards/outbox.py)."""
    return at.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


@dataclass
class Transaction:
    number: int
    started_s: float
    lock_timeout_s: float
    locks: set[Key] = field(default_factory=set)
    writes: list[Callable[[], object]] = field(default_factory=list)
    aborted: bool = False
    finished: bool = False  # committed or rolled back: it takes no lock any more
    prepared_gid: str | None = None
    prepared_s: float = 0.0


@dataclass
class PhaseEntry:
    row: PhaseRow
    updated_s: float


@dataclass
class OutboxRow:
    event_id: int
    event: BalanceEvent
    created_at: datetime


class Locks:
    """Row locks and unique keys of one shard: a holder each, waiters in arrival order."""

    def __init__(self, shard: str) -> None:
        self.shard = shard
        self.holders: dict[Key, Transaction] = {}
        self.waiting: dict[Key, deque[tuple[Transaction, asyncio.Future[None]]]] = {}

    async def acquire(self, transaction: Transaction, key: Key, timeout_s: float) -> None:
        if transaction.finished:  # its session died while the statement ran
            raise ShardUnavailable(self.shard, "connection lost")
        holder = self.holders.get(key)
        if holder is None or holder is transaction:
            self.holders[key] = transaction
            transaction.locks.add(key)
            return
        granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue = self.waiting.setdefault(key, deque())
        queue.append((transaction, granted))
        try:
            await asyncio.wait({granted}, timeout=timeout_s)
        finally:
            if not granted.done():
                queue.remove((transaction, granted))
                granted.cancel()
            elif not granted.cancelled():
                granted.exception()  # retrieved, whichever way this wait ends
        if granted.cancelled():
            raise ShardRetryable(self.shard, f"lock timeout on {key} (55P03)")
        granted.result()  # a crash while waiting raises here
        if transaction.finished:  # it ended while the grant was on its way: the lock goes on
            self.release(transaction)
            raise ShardUnavailable(self.shard, "connection lost")

    def release(self, transaction: Transaction) -> None:
        for key in sorted(transaction.locks):
            if self.holders.get(key) is not transaction:
                continue
            del self.holders[key]
            queue = self.waiting.get(key)
            while queue:
                waiter, granted = queue.popleft()
                if not granted.done():
                    self.holders[key] = waiter
                    waiter.locks.add(key)
                    granted.set_result(None)
                    break
        transaction.locks.clear()

    def fail_waiters(self, error: Exception, of: Callable[[Transaction], bool]) -> None:
        for queue in self.waiting.values():
            for waiter, granted in list(queue):
                if of(waiter) and not granted.done():
                    queue.remove((waiter, granted))
                    granted.set_exception(error)


class SimulatedShard:
    """One shard's durable state, its locks, and the transactions open on it."""

    def __init__(self, name: str, clock: Callable[[], float], faults: Faults | None = None) -> None:
        self.name = name
        self.clock = clock
        self.faults: Faults = faults or NoFaults()
        self.accounts: dict[str, Account] = {}
        self.records: dict[str, TransferResult] = {}
        self.outbox: dict[int, OutboxRow] = {}
        self.decisions: dict[str, tuple[str, float]] = {}
        self.phases: dict[str, PhaseEntry] = {}
        self.barrier: dict[tuple[str, str, str], str] = {}
        self.prepared: dict[str, Transaction] = {}
        self.locks = Locks(name)
        self.next_event_id = 1
        self.next_transaction = 1
        self.incarnation = 0
        self.up = True
        self.sessions: set[SimulatedSession] = set()
        # Seen, not refused (PostgreSQL has no constraint for it): a branch's Try let in after its
        # Cancel, the hanging branch the barrier's null-compensation marker exists to prevent.
        self.late_tries: list[str] = []

    def now(self) -> datetime:
        return EPOCH + timedelta(seconds=self.clock())

    def start_transaction(self, lock_timeout_s: float) -> Transaction:
        self.next_transaction += 1
        return Transaction(self.next_transaction, self.clock(), lock_timeout_s)

    def finish(self, transaction: Transaction, commit: bool) -> None:
        transaction.finished = True
        if commit and not transaction.aborted:
            for write in transaction.writes:
                write()
        transaction.writes.clear()
        self.locks.release(transaction)

    def crash(self) -> None:
        """Every session ends, every open transaction rolls back; prepared ones stay, locks and all."""
        self.incarnation += 1
        for session in sorted(self.sessions, key=lambda s: s.number):
            session.lose()
        self.sessions.clear()

    def restart(self) -> None:
        self.up = True

    def create_account(self, account_id: str, currency: str, balance: int = 0) -> None:
        """Setup only (the simulator opens accounts funded, as a committed deposit would leave them)."""
        self.accounts[account_id] = Account(account_id, "sim", currency, balance, 0, "active", 0)

    def totals(self) -> tuple[int, int]:
        return sum(a.balance for a in self.accounts.values()), sum(a.reserved for a in self.accounts.values())


class SimulatedSession:
    """A session on a SimulatedShard: the contract's methods, each a statement."""

    numbers = 0

    def __init__(self, shard: SimulatedShard, lost: Callable[[SimulatedSession], None] | None = None) -> None:
        SimulatedSession.numbers += 1
        self.number = SimulatedSession.numbers
        self.shard = shard.name
        self.server = shard
        self.incarnation = shard.incarnation
        self.transaction: Transaction | None = None
        self.dead = False
        self.on_lost = lost

    # -- the connection ----------------------------------------------------------------------
    def lose(self) -> None:
        """The connection is gone: its open transaction rolls back (a prepared one stays)."""
        if self.dead:
            return
        self.dead = True
        if self.transaction is not None:
            transaction, self.transaction = self.transaction, None
            self.server.locks.fail_waiters(ShardUnavailable(self.shard, "connection lost"), lambda t: t is transaction)
            self.server.finish(transaction, commit=False)
        self.server.sessions.discard(self)
        if self.on_lost is not None:
            self.on_lost(self)

    def _check_alive(self) -> None:
        if self.dead or self.incarnation != self.server.incarnation or not self.server.up:
            self.lose()
            raise ShardUnavailable(self.shard, "connection lost")

    @asynccontextmanager
    async def statement(self, operation: str) -> AsyncIterator[Transaction]:
        """One statement: in the open transaction, or in one of its own (autocommit). A failure
        aborts the transaction; the faults the world asks for happen around it."""
        self._check_alive()
        fault = await self._arrive(operation)
        own = self.transaction is None
        transaction = self.transaction or self.server.start_transaction(SESSION_LOCK_TIMEOUT_S)
        if transaction.aborted:
            raise ShardRetryable(self.shard, "current transaction is aborted (25P02)")
        staged = len(transaction.writes)
        try:
            yield transaction
            self._check_alive()
        except BaseException:
            del transaction.writes[staged:]
            if own:
                self.server.finish(transaction, commit=False)
            else:
                transaction.aborted = True
            raise
        if own:
            self.server.finish(transaction, commit=True)
        if fault == "drop_after":
            self.lose()
            raise ShardUnavailable(self.shard, f"connection lost after {operation} (its answer with it)")

    def in_transaction(self) -> bool:
        return self.transaction is not None

    def forget_if_broken(self, error: BaseException) -> None:
        if isinstance(error, ShardUnavailable):
            self.lose()

    # -- transactions -------------------------------------------------------------------------
    async def _arrive(self, operation: str) -> Fault:
        """The world's fault for this statement, as it reaches the server: a delay is slept, a
        connection lost before it raises; a fault after it is the caller's to act on."""
        fault, delay_s = self.server.faults.before(self.shard, operation)
        if fault == "delay":
            await asyncio.sleep(delay_s)
            self._check_alive()
        if fault == "drop_before":
            self.lose()
            raise ShardUnavailable(self.shard, f"connection lost before {operation}")
        return fault

    async def begin(self, lock_timeout_ms: int | None = None) -> None:
        self._check_alive()
        assert self.transaction is None, "BEGIN inside a transaction"
        if await self._arrive("begin") == "drop_after":
            self.lose()
            raise ShardUnavailable(self.shard, "connection lost at BEGIN")
        timeout_s = SESSION_LOCK_TIMEOUT_S if lock_timeout_ms is None else lock_timeout_ms / 1000
        self.transaction = self.server.start_transaction(timeout_s)

    async def commit(self) -> None:
        self._check_alive()
        assert self.transaction is not None, "COMMIT outside a transaction"
        fault = await self._arrive("commit")
        transaction, self.transaction = self.transaction, None
        self.server.finish(transaction, commit=True)  # an aborted one rolls back
        if fault == "drop_after":
            self.lose()
            raise ShardUnavailable(self.shard, "connection lost after COMMIT (its answer with it)")

    async def rollback(self) -> None:
        self._check_alive()
        if self.transaction is not None:
            transaction, self.transaction = self.transaction, None
            self.server.finish(transaction, commit=False)

    async def prepare(self, gid: str) -> None:
        assert GID_PATTERN.match(gid), f"not a wallet gid: {gid}"
        self._check_alive()
        assert self.transaction is not None, "PREPARE outside a transaction"
        async with self.statement("prepare") as transaction:
            if transaction.aborted:
                return
            if gid in self.server.prepared:
                raise ShardRetryable(self.shard, f"transaction identifier {gid} is already in use")
            transaction.prepared_gid = gid
            transaction.prepared_s = self.server.clock()
            self.server.prepared[gid] = transaction
            self.transaction = None

    async def commit_prepared(self, gid: str) -> bool:
        return await self._finish_prepared(gid, commit=True)

    async def rollback_prepared(self, gid: str) -> bool:
        return await self._finish_prepared(gid, commit=False)

    async def _finish_prepared(self, gid: str, commit: bool) -> bool:
        assert self.transaction is None, "COMMIT/ROLLBACK PREPARED cannot run inside a transaction"
        async with self.statement("commit_prepared" if commit else "rollback_prepared"):
            prepared = self.server.prepared.pop(gid, None)
            if prepared is None:
                return False  # 42704: finished already
            self.server.finish(prepared, commit=commit)
            return True

    # -- balances, records, outbox -----------------------------------------------------------
    async def _lock_rows(self, transaction: Transaction, keys: list[Key]) -> None:
        for key in keys:
            await self.server.locks.acquire(transaction, key, transaction.lock_timeout_s)

    async def lock_accounts(self, account_ids: list[str]) -> dict[str, Account]:
        async with self.statement("lock_accounts") as transaction:
            wanted = sorted({a for a in account_ids if a in self.server.accounts})
            await self._lock_rows(transaction, [("account", a) for a in wanted])
            return {a: self.server.accounts[a] for a in wanted}

    async def _insert_unique(
        self, transaction: Transaction, name: str, table: Container[object], member: Hashable
    ) -> None:
        """The unique key (name, member) of `table`: checked once the key's holder, if any, finished."""
        key = (name, str(member))
        await self.server.locks.acquire(transaction, key, transaction.lock_timeout_s)
        if member in table:
            raise ShardRetryable(self.shard, f"duplicate key {key} (23505)")

    async def _stage_write(
        self,
        transaction: Transaction,
        changes: dict[str, AccountChange],
        records: RecordColumns,
        events: list[BalanceEvent],
        commit_decision: str | None,
    ) -> datetime:
        shard = self.server
        created_at = EPOCH + timedelta(seconds=transaction.started_s)
        for account_id in sorted(changes):
            await shard.locks.acquire(transaction, ("account", account_id), transaction.lock_timeout_s)
            account = shard.accounts.get(account_id)
            assert account is not None, f"batch moved an account {account_id} not on {self.shard}"
            change = changes[account_id]
            balance, reserved = account.balance + change.balance_delta, account.reserved + change.reserved_delta
            if balance < 0 or reserved < 0 or reserved > balance:
                raise ConstraintViolated(f"{self.shard}: {account_id} to balance {balance}, reserved {reserved}")
        for transfer in records.transfers:
            await self._insert_unique(transaction, "transfer", shard.records, transfer.transaction_id)
        if commit_decision is not None:
            await self._insert_unique(transaction, "decision", shard.decisions, commit_decision)
        outbox = []
        for event in events:
            outbox.append(OutboxRow(shard.next_event_id, event, created_at))
            shard.next_event_id += 1
        started_s = transaction.started_s

        def apply() -> None:
            for account_id, change in changes.items():
                a = shard.accounts[account_id]
                shard.accounts[account_id] = a._replace(
                    balance=a.balance + change.balance_delta,
                    reserved=a.reserved + change.reserved_delta,
                    version=a.version + change.versions,
                )
            for index, transfer in enumerate(records.transfers):
                shard.records[transfer.transaction_id] = TransferResult(
                    transfer,
                    records.statuses[index],
                    records.error_codes[index],
                    records.protocols[index],
                    records.phases[index],
                    created_at,
                )
            for row in outbox:
                shard.outbox[row.event_id] = row
            if commit_decision is not None:
                shard.decisions[commit_decision] = ("commit", started_s)

        transaction.writes.append(apply)
        return created_at

    async def write_batch(
        self,
        changes: dict[str, AccountChange],
        records: RecordColumns,
        events: list[BalanceEvent],
        commit_decision: str | None = None,
    ) -> datetime:
        async with self.statement("write_batch") as transaction:
            return await self._stage_write(transaction, changes, records, events, commit_decision)

    async def select_transfers(self, transaction_ids: list[str]) -> dict[str, TransferResult]:
        async with self.statement("select_transfers"):
            return {i: self.server.records[i] for i in transaction_ids if i in self.server.records}

    async def record_is_held(self, transaction_id: str) -> bool:
        async with self.statement("record_is_held") as transaction:
            key = ("transfer", transaction_id)
            holder = self.server.locks.holders.get(key)
            if holder is None or holder is transaction:
                return False
            probe = self.server.start_transaction(PROBE_LOCK_TIMEOUT_S)
            try:
                await self.server.locks.acquire(probe, key, PROBE_LOCK_TIMEOUT_S)
            except ShardRetryable:
                return True
            finally:
                self.server.finish(probe, commit=False)
            return False

    # -- TC/C and Saga steps -----------------------------------------------------------------
    async def read_step(
        self, account_ids: list[str], transaction_ids: list[str], phases: bool = False, records: bool = False
    ) -> StepRead:
        async with self.statement("read_step") as transaction:
            shard = self.server
            wanted = sorted({a for a in account_ids if a in shard.accounts})
            await self._lock_rows(transaction, [("account", a) for a in wanted])
            ids = sorted(set(transaction_ids))
            phase_ids = [i for i in ids if i in shard.phases] if phases else []
            await self._lock_rows(transaction, [("phase", i) for i in phase_ids])
            return StepRead(
                {a: shard.accounts[a] for a in wanted},
                {i: shard.phases[i].row for i in phase_ids if i in shard.phases},
                {i: shard.records[i] for i in ids if i in shard.records} if records else {},
                {key: origin for key, origin in shard.barrier.items() if key[0] in set(ids)},
            )

    async def write_step(
        self,
        changes: dict[str, AccountChange],
        records: RecordColumns,
        events: list[BalanceEvent],
        barrier: Sequence[BarrierRow],
        opened: Sequence[Transfer] = (),
        advanced: Sequence[PhaseUpdate] = (),
    ) -> datetime:
        async with self.statement("write_step") as transaction:
            shard = self.server
            created_at = await self._stage_write(transaction, changes, records, events, None)
            for transaction_id, branch, operation, _ in barrier:
                await self._insert_unique(transaction, "barrier", shard.barrier, (transaction_id, branch, operation))
            for transfer in opened:
                await self._insert_unique(transaction, "phase", shard.phases, transfer.transaction_id)
            for update in advanced:
                await shard.locks.acquire(transaction, ("phase", update.transaction_id), transaction.lock_timeout_s)
            started_s = transaction.started_s

            def apply() -> None:
                for transaction_id, branch, operation, origin in barrier:
                    if (operation, origin) == ("try", "try") and (transaction_id, branch, "cancel") in shard.barrier:
                        shard.late_tries.append(f"{transaction_id} {branch}: a Try admitted after its Cancel")
                    shard.barrier[(transaction_id, branch, operation)] = origin
                for transfer in opened:
                    row = PhaseRow(transfer, "received", "sent", None, "none", None, False)  # type: ignore[arg-type]  # the column's default
                    shard.phases[transfer.transaction_id] = PhaseEntry(row, started_s)
                for update in advanced:
                    entry = shard.phases.get(update.transaction_id)
                    if entry is None:
                        continue  # UPDATE of no row
                    entry.row = replace(
                        entry.row,
                        second_phase=update.second_phase,
                        second_state=update.second_state,
                        error_code=update.error_code,
                        out_of_order=entry.row.out_of_order or update.out_of_order,
                    )
                    entry.updated_s = started_s

            transaction.writes.append(apply)
            return created_at

    async def select_phases(self, transaction_ids: list[str]) -> dict[str, PhaseRow]:
        async with self.statement("select_phases"):
            return {i: self.server.phases[i].row for i in transaction_ids if i in self.server.phases}

    async def select_unfinished(self, older_than_ms: int, limit: int) -> list[PhaseRow]:
        async with self.statement("select_unfinished") as transaction:
            before_s = transaction.started_s - older_than_ms / 1000
            entries = [
                e for e in self.server.phases.values() if e.row.second_state != "done" and e.updated_s < before_s
            ]
            entries.sort(key=lambda e: (e.updated_s, e.row.transfer.transaction_id))
            return [e.row for e in entries[:limit]]

    async def mark_done(self, transaction_ids: list[str]) -> None:
        async with self.statement("mark_done") as transaction:
            shard = self.server
            targets = [i for i in sorted(set(transaction_ids)) if i in shard.phases]
            for transaction_id in targets:
                await shard.locks.acquire(transaction, ("phase", transaction_id), transaction.lock_timeout_s)
            started_s = transaction.started_s

            def apply() -> None:
                for transaction_id in targets:
                    entry = shard.phases[transaction_id]
                    if entry.row.second_phase is not None and entry.row.second_state != "done":
                        entry.row = replace(entry.row, second_state="done")
                        entry.updated_s = started_s

            transaction.writes.append(apply)

    # -- two-phase decisions -----------------------------------------------------------------
    async def decide_unless_decided(self, batch_id: str, outcome: str) -> str:
        assert outcome in ("commit", "abort")
        async with self.statement("decide_unless_decided") as transaction:
            shard = self.server
            await shard.locks.acquire(transaction, ("decision", batch_id), transaction.lock_timeout_s)
            if batch_id in shard.decisions:
                return shard.decisions[batch_id][0]
            started_s = transaction.started_s
            transaction.writes.append(lambda: shard.decisions.setdefault(batch_id, (outcome, started_s)))
            return outcome

    async def select_decisions(self, batch_ids: list[str]) -> dict[str, str]:
        async with self.statement("select_decisions"):
            return {b: self.server.decisions[b][0] for b in batch_ids if b in self.server.decisions}

    async def prune_decisions(self, older_than_s: int, keep: list[str], limit: int) -> int:
        async with self.statement("prune_decisions") as transaction:
            shard = self.server
            kept = set(keep)
            old = sorted(
                (decided_s, batch_id)
                for batch_id, (_, decided_s) in shard.decisions.items()
                if decided_s < transaction.started_s - older_than_s and batch_id not in kept
            )[:limit]
            transaction.writes.append(lambda: [shard.decisions.pop(b, None) for _, b in old])
            return len(old)

    async def select_prepared(self) -> list[PreparedBranch]:
        async with self.statement("select_prepared") as transaction:
            branches = []
            for gid, prepared in sorted(self.server.prepared.items(), key=lambda item: item[1].prepared_s):
                match = GID_PATTERN.match(gid)
                assert match is not None
                branches.append(
                    PreparedBranch(
                        gid,
                        match["batch"],
                        match["decision"],
                        match["branch"],
                        EPOCH + timedelta(seconds=prepared.prepared_s),
                        int((transaction.started_s - prepared.prepared_s) * 1000),
                    )
                )
            return branches

    # -- the relay's side --------------------------------------------------------------------
    async def select_relay_rows(self, limit: int) -> list[RelayRow]:
        async with self.statement("select_relay_rows"):
            rows = []
            for event_id in sorted(self.server.outbox)[:limit]:
                row = self.server.outbox[event_id]
                e, at = row.event, moment(row.created_at)
                fields = (event_id, *e, at)
                rows.append((event_id, e.account_id, e.version, at, "\x1f".join(str(f) for f in fields)))
            return rows

    async def delete_relayed(self, event_ids: list[int]) -> None:
        async with self.statement("delete_relayed") as transaction:
            shard = self.server
            ids = list(event_ids)
            transaction.writes.append(lambda: [shard.outbox.pop(i, None) for i in ids])


class SimulatedShards:
    """The Shards contract over simulated shards: sessions, optionally owned by a node of the
    world (a coordinator) so that its crash ends them."""

    def __init__(self, shards: dict[str, SimulatedShard], owner: Callable[[], str] = lambda: "") -> None:
        self.shards = shards
        self.owner = owner
        self.open: dict[str, set[SimulatedSession]] = {}

    def _open(self, shard: str) -> tuple[SimulatedSession, str]:
        server = self.shards[shard]
        if not server.up:
            raise ShardUnavailable(shard, "connection refused (the shard is down)")
        node = self.owner()
        session = SimulatedSession(server, lost=lambda s: self.open.get(node, set()).discard(s))
        server.sessions.add(session)
        self.open.setdefault(node, set()).add(session)
        return session, node

    def end_sessions_of(self, node: str) -> None:
        """The node died: its connections close, their open transactions roll back."""
        for session in sorted(self.open.pop(node, set()), key=lambda s: s.number):
            session.lose()

    @asynccontextmanager
    async def session(self, shard: str) -> AsyncIterator[SimulatedSession]:
        session, node = self._open(shard)
        try:
            yield session
        finally:
            if session.transaction is not None and not session.dead:
                transaction, session.transaction = session.transaction, None
                session.server.finish(transaction, commit=False)
            session.server.sessions.discard(session)
            self.open.get(node, set()).discard(session)

    @asynccontextmanager
    async def atomic(self, shard: str) -> AsyncIterator[SimulatedSession]:
        async with self.session(shard) as session:
            await session.begin()
            try:
                yield session
            except BaseException:
                if not session.dead:
                    await session.rollback()
                raise
            await session.commit()
