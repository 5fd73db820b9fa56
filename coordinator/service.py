"""WalletService: where a request becomes a routed, batched, recorded transfer.

  validate -> route (shard_router) -> one shard?  local batch (local.py)
                                   -> two shards? the cross-shard protocol for `mode`
"""
from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable, TypeVar
from uuid import UUID

from coordinator import validation
from coordinator.batch_plan import StoredTransfer
from coordinator.config import Settings
from coordinator.domain import Account, Transfer, TransferResult
from coordinator.errors import WalletError
from coordinator.group_commit import BatchApplier
from coordinator.local import CONFLICT, apply_local_batch
from coordinator.money import check_currency, parse_amount
from coordinator.background import Periodic
from coordinator.record_lookup import RecordLookup, record_lookup
from coordinator.recovery import ABORT_AFTER_MS_DEFAULT, RecoveryReport, recover_once, recovery_worker
from coordinator.saga import SagaCoordinator
from coordinator.tcc import TccCoordinator
from coordinator.two_phase import TwoPhaseCommit
from coordinator import branches
from ledger.service import LedgerService
from shard_router.topology import Topology
from shards import accounts as account_sql
from shards import branches as branch_sql
from shards import transfers as transfer_sql
from shards.branches import PhaseRow
from shard_router.stores import TopologyStore
from shards.errors import AccountsMoved, ShardError, ShardUnavailable
from shards.pool import ShardPools

log = logging.getLogger("wallet.service")
Outcome = TypeVar("Outcome")

# A single process holds at most this many distinct transaction ids in flight.
INFLIGHT_MAX = 100_000
TRANSFERS_PER_REQUEST_MAX = 1000
# Unfinished TC/C and Saga transfers one recovery pass drives forward, per shard.
RESUME_PER_PASS_MAX = 1_000
# A shard refuses accounts it no longer serves (a slot migration moved them): re-read the
# topology and route again, at most this many times, waiting a little longer each time
# (a migration's flip is short, but the new version reaches us after it).
REROUTE_ATTEMPTS_MAX = 12
REROUTE_WAIT_MS = 100


class WalletService:
    def __init__(self, topology: Topology, settings: Settings, store: TopologyStore | None = None,
                 is_leader: Callable[[], bool] = lambda: True) -> None:
        self.topology = topology
        self.settings = settings
        # Where a newer topology is read when a shard refuses a stale route (None: never).
        self.store = store
        # Whether this process runs the singletons (recovery worker, ledger relay) now.
        self.is_leader = is_leader
        self.switching = asyncio.Lock()
        self.pools = ShardPools(topology.shards, size_max=settings.pool_size_max)
        self.appliers: dict[str, BatchApplier[Transfer, TransferResult | str]] = {}
        self.lookups: dict[str, RecordLookup] = {}  # per shard, started with its applier
        self.inflight: dict[UUID, asyncio.Future[TransferResult]] = {}
        self.two_phase = TwoPhaseCommit(self.pools, lambda: self.topology, self._find_elsewhere)
        self.tcc = TccCoordinator(self.pools, lambda: self.topology, self._find_elsewhere)
        self.saga = SagaCoordinator(self.pools, lambda: self.topology, self._find_elsewhere)
        # Cross-shard batches, by protocol. Several in flight at once: the lock order
        # (shard name, then account id) keeps them from deadlocking across servers.
        self.cross_appliers: dict[str, BatchApplier[Transfer, TransferResult | str]] = {}
        self.recovery: Periodic | None = None
        self.ledger = LedgerService(topology.ledger, self.pools, sorted(topology.shards)) if topology.ledger else None

    async def open(self, run_recovery: bool = False, run_relay: bool = False) -> WalletService:
        await self.pools.open()
        if self.ledger is not None:
            await self.ledger.open(run_relay=run_relay, gate=self.is_leader)
        for shard in sorted(self.topology.shards):
            self._start_applier(shard)
        for mode, apply in (("2pc", self.two_phase.apply_batch), ("tcc", self.tcc.apply_batch),
                            ("saga", self.saga.apply_batch)):
            self.cross_appliers[mode] = BatchApplier(mode, apply, self.settings.limits)
            self.cross_appliers[mode].start()
        if run_recovery:
            self.recovery = recovery_worker(self.recover, gate=self.is_leader)
            self.recovery.start()
        return self

    async def close(self) -> None:
        if self.recovery is not None:
            await self.recovery.stop()
            self.recovery = None
        everyone = [*self.appliers.values(), *self.cross_appliers.values()]
        await asyncio.gather(*(applier.stop() for applier in everyone))
        await asyncio.gather(*(lookup.stop() for lookup in self.lookups.values()))
        self.appliers, self.cross_appliers, self.lookups = {}, {}, {}
        if self.ledger is not None:
            await self.ledger.close()
        await self.pools.close()

    def _start_applier(self, shard: str) -> None:
        applier: BatchApplier[Transfer, TransferResult | str] = BatchApplier(
            shard, lambda batch: self._apply_local(shard, batch), self.settings.limits
        )
        applier.start()
        self.appliers[shard] = applier
        lookup = record_lookup(self.pools, shard)
        lookup.start()
        self.lookups[shard] = lookup

    async def switch_topology(self, topology: Topology) -> bool:
        """Route by `topology` from now on, if it is newer: new shards get pools and
        appliers, moved addresses new pools. Shards dropped from the topology keep their
        pools until close (nothing routes to them). True if it switched."""
        async with self.switching:
            if topology.version <= self.topology.version:
                return False
            for shard, dsn in sorted(topology.shards.items()):
                await self.pools.set_address(shard, dsn)
                if shard not in self.appliers and self.cross_appliers:  # opened
                    self._start_applier(shard)
            if self.ledger is not None:
                self.ledger.shards[:] = sorted(set(self.ledger.shards) | set(topology.shards))
            log.info("topology version %s -> %s", self.topology.version, topology.version)
            self.topology = topology
            return True

    async def refresh_topology(self) -> bool:
        """Read the store now (not only wait for its watch). True if a newer version came."""
        if self.store is None:
            return False
        store = self.store
        return await self.switch_topology(await asyncio.to_thread(store.load))

    async def _rerouting(self, action: Callable[[], Awaitable[Outcome]]) -> Outcome:
        """Run `action` (which routes by self.topology), routing again after a shard refused
        accounts it does not serve. A refusal wrote nothing, so the retry is safe."""
        for attempt in range(REROUTE_ATTEMPTS_MAX):
            try:
                return await action()
            except AccountsMoved as moved:
                log.info("rerouting after a refusal (topology %s): %s", self.topology.version, moved)
                if self.store is None:
                    break  # nowhere to learn a newer topology from
                if not await self.refresh_topology():
                    await asyncio.sleep(REROUTE_WAIT_MS * (attempt + 1) / 1000)
        raise WalletError("shard_unavailable", "the account is moving between shards; retry with the same transaction_id")

    async def recover(self, abort_after_ms: int = ABORT_AFTER_MS_DEFAULT) -> RecoveryReport:
        """One pass: finish two-phase batches left prepared, then drive unfinished TC/C and
        Saga transfers (untouched for `abort_after_ms`) to their end."""
        shards = sorted(self.topology.shards)
        report = await recover_once(self.pools, shards, abort_after_ms)
        for shard in shards:
            try:
                phases = await branches.unfinished(self.pools, shard, abort_after_ms, RESUME_PER_PASS_MAX)
            except ShardError as error:
                report.errors.append(f"{shard}: cannot list unfinished transfers: {error}")
                continue
            for protocol in (self.tcc, self.saga):
                outcomes = await protocol.resume(phases)
                report.resumed += sum(1 for outcome in outcomes.values() if not isinstance(outcome, Exception))
                report.errors.extend(f"{tid}: {outcome}" for tid, outcome in outcomes.items() if isinstance(outcome, Exception))
        return report

    async def __aenter__(self) -> WalletService:
        return await self.open()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- accounts --------------------------------------------------------------------------
    async def create_account(self, account_id: object, owner: object, currency: object) -> tuple[Account, bool]:
        """(account, created). Creating the same account twice is a no-op; a different one is a conflict."""
        account_id = validation.check_account_id(account_id)
        owner = validation.check_owner(owner)
        currency = check_currency(currency)

        async def attempt() -> tuple[Account, bool] | Account:
            shard = self.topology.shard_of(account_id)
            pinned = account_id in self.topology.overrides
            async with self.pools.connection(shard) as connection:
                account = await account_sql.insert_account(connection, account_id, owner, currency, pinned)
                if account is not None:
                    return account, True
                existing = await account_sql.select_account(connection, account_id)
            if existing is None:  # accounts are never deleted: the shard does not own the slot
                raise AccountsMoved([account_id])
            return existing

        created = await self._rerouting(attempt)
        if isinstance(created, tuple):
            return created
        existing = created
        if existing.owner != owner or existing.currency != currency:
            raise WalletError("account_exists", f"account {account_id} already exists with other details")
        return existing, False

    async def get_account(self, account_id: object) -> Account:
        account_id = validation.check_account_id(account_id)

        async def attempt() -> Account | None:
            async with self.pools.connection(self.topology.shard_of(account_id)) as connection:
                return await account_sql.select_account(connection, account_id)

        account = await self._rerouting(attempt)
        if account is None:
            raise WalletError("account_not_found", f"account {account_id} does not exist")
        return account

    async def set_account_status(self, account_id: object, status: str) -> Account:
        account_id = validation.check_account_id(account_id)
        assert status in ("active", "frozen"), "status is active or frozen"

        async def attempt() -> Account | None:
            async with self.pools.connection(self.topology.shard_of(account_id)) as connection:
                updated = await account_sql.update_account_status(connection, account_id, status)
                if updated is not None:
                    return updated
                # No such account (None), or not served here (select_account raises), or it
                # became live here just now (route again).
                if await account_sql.select_account(connection, account_id) is not None:
                    raise AccountsMoved([account_id])
                return None

        account = await self._rerouting(attempt)
        if account is None:
            raise WalletError("account_not_found", f"account {account_id} does not exist")
        return account

    # -- money movement ----------------------------------------------------------------------
    async def deposit(self, account_id: object, amount: object, transaction_id: object) -> TransferResult:
        """Money enters from outside. Idempotent on transaction_id."""
        account = await self.get_account(account_id)
        transfer = Transfer(
            transaction_id=validation.check_transaction_id(transaction_id),
            kind="deposit",
            from_account=None,
            to_account=account.account_id,
            amount=parse_amount(amount, account.currency),
            currency=account.currency,
            mode="local",  # a deposit touches one shard: no cross-shard protocol applies
        )
        return await self._submit(transfer)

    async def transfer(
        self,
        from_account: object,
        to_account: object,
        amount: object,
        currency: object,
        transaction_id: object,
        mode: object = None,
    ) -> TransferResult:
        return await self._submit(self._transfer_of(from_account, to_account, amount, currency, transaction_id, mode))

    def _transfer_of(self, from_account: object, to_account: object, amount: object, currency: object,
                     transaction_id: object, mode: object) -> Transfer:
        from_account = validation.check_account_id(from_account, "from_account")
        to_account = validation.check_account_id(to_account, "to_account")
        currency = check_currency(currency)
        minor = parse_amount(amount, currency)
        transaction = validation.check_transaction_id(transaction_id)
        chosen_mode = validation.check_mode(mode, self.settings.default_mode)
        if from_account == to_account:
            raise WalletError("same_account", "from_account and to_account must differ")
        return Transfer(transaction, "transfer", from_account, to_account, minor, currency, chosen_mode)

    async def transfer_many(self, items: list[dict[str, object]]) -> list[TransferResult | WalletError]:
        """Many transfers at once, each with its own outcome: a bad item fails alone.

        The whole call is validated first, then enqueued on the appliers in one step per
        applier (no task per item). An id repeated in the call, or already in flight, takes
        the one-at-a-time path, which waits for the first."""
        assert len(items) <= TRANSFERS_PER_REQUEST_MAX, f"at most {TRANSFERS_PER_REQUEST_MAX} transfers per call"
        answers: list[TransferResult | WalletError | None] = [None] * len(items)
        grouped: dict[BatchApplier[Transfer, TransferResult | str], list[tuple[int, Transfer]]] = {}
        later: list[tuple[int, Transfer]] = []
        mine: dict[UUID, asyncio.Future[TransferResult]] = {}  # this call's in-flight registrations
        for index, item in enumerate(items):
            try:
                transfer = self._transfer_of(item.get("from_account"), item.get("to_account"), item.get("amount"),
                                             item.get("currency"), item.get("transaction_id"), item.get("mode"))
            except WalletError as error:
                answers[index] = error
                continue
            if transfer.transaction_id in self.inflight or len(self.inflight) >= INFLIGHT_MAX:
                later.append((index, transfer))
                continue
            mine[transfer.transaction_id] = self.inflight[transfer.transaction_id] = \
                asyncio.get_running_loop().create_future()
            grouped.setdefault(self._applier_for(transfer), []).append((index, transfer))

        def settle(index: int, transfer: Transfer, outcome: TransferResult | str | BaseException) -> None:
            future = self.inflight.pop(transfer.transaction_id)
            try:
                result = self._settle(transfer, outcome)
                future.set_result(result)
                answers[index] = result
            except WalletError as error:
                future.set_exception(error)
                future.exception()  # waiters, if any, re-raise it themselves
                answers[index] = error
            except BaseException as error:  # not a transfer's answer: the call fails
                future.set_exception(error)
                future.exception()
                raise

        async def route_again(index: int, transfer: Transfer) -> None:
            """A slot moved under it: route it alone, still registered as in flight."""
            try:
                outcome: TransferResult | BaseException = await self._rerouting(lambda: self._route(transfer))
            except WalletError as error:
                outcome = error
            settle(index, transfer, outcome)

        async def one_at_a_time(index: int, transfer: Transfer) -> None:
            try:
                answers[index] = await self._submit(transfer)
            except WalletError as error:
                answers[index] = error

        placed: list[tuple[int, Transfer]] = []
        try:
            futures: list[asyncio.Future[TransferResult | str]] = []
            for applier, members in grouped.items():
                futures.extend(await applier.enqueue([transfer for _, transfer in members]))
                placed.extend(members)
            outcomes = await asyncio.gather(*futures, return_exceptions=True)
            moved: list[tuple[int, Transfer]] = []
            for (index, transfer), outcome in zip(placed, outcomes):
                if isinstance(outcome, AccountsMoved):
                    moved.append((index, transfer))
                else:
                    settle(index, transfer, outcome)
            await asyncio.gather(*(route_again(index, transfer) for index, transfer in moved),
                                 *(one_at_a_time(index, transfer) for index, transfer in later))
        finally:
            # Cancelled or failed half-way: no id of this call stays registered, and no
            # waiter on one is left hanging.
            for transaction_id, future in mine.items():
                if self.inflight.get(transaction_id) is future:
                    del self.inflight[transaction_id]
                if not future.done():
                    future.set_exception(WalletError(
                        "shard_unavailable", "the batch call ended before this transfer's outcome was known; "
                                             "retry with the same transaction_id"))
                    future.exception()
        assert all(answer is not None for answer in answers), "every item has an answer"
        return answers  # type: ignore[return-value]

    async def get_transfer(self, transaction_id: object) -> TransferResult:
        transaction = validation.check_transaction_id(transaction_id)
        found = await self._find_transfers(sorted(self.topology.shards), [transaction])
        if transaction not in found:
            raise WalletError("transfer_not_found", f"no transfer with transaction_id {transaction}")
        return found[transaction].result

    async def find_progress(self, transaction_id: object) -> str | None:
        """The phase of a TC/C or Saga transfer that has started but has no record yet."""
        transaction = validation.check_transaction_id(transaction_id)

        async def one(shard: str) -> dict[UUID, PhaseRow]:
            async with self.pools.connection(shard) as connection:
                return await branch_sql.select_phases(connection, [transaction])

        for found in await asyncio.gather(*(one(shard) for shard in sorted(self.topology.shards))):
            phase = found.get(transaction)
            if phase is not None:
                if phase.second_phase is None:
                    return "trying" if phase.transfer.mode == "tcc" else "debited"
                return "confirming" if phase.second_phase == "confirm" else "cancelling"
        return None

    async def in_doubt(self, transaction_id: object) -> bool:
        """True if a prepared (or still open) branch on some shard holds the transfer's record:
        its coordinator is between PREPARE and COMMIT PREPARED, or died there."""
        transaction = validation.check_transaction_id(transaction_id)

        async def one(shard: str) -> bool:
            async with self.pools.connection(shard) as connection:
                return await transfer_sql.record_is_held(connection, transaction)

        return any(await asyncio.gather(*(one(shard) for shard in sorted(self.topology.shards))))

    def in_flight(self, transaction_id: object) -> bool:
        """True while this process is still working on the transaction id (not yet recorded)."""
        try:
            return validation.check_transaction_id(transaction_id) in self.inflight
        except WalletError:
            return False

    async def totals(self) -> tuple[int, int, int]:
        """(sum of balances, sum of reserved, accounts) over every shard. Not a snapshot:
        read it when no transfer is in flight."""
        async def one(shard: str) -> tuple[int, int, int]:
            async with self.pools.connection(shard) as connection:
                return await account_sql.sum_balances(connection)

        sums = await asyncio.gather(*(one(shard) for shard in sorted(self.topology.shards)))
        return sum(s[0] for s in sums), sum(s[1] for s in sums), sum(s[2] for s in sums)

    # -- internals ---------------------------------------------------------------------------
    async def _submit(self, transfer: Transfer) -> TransferResult:
        # One transaction id in flight once per process: a concurrent retry waits for the first.
        running = self.inflight.get(transfer.transaction_id)
        if running is not None:
            result = await asyncio.shield(running)
            return self._check_same(transfer, result)
        if len(self.inflight) >= INFLIGHT_MAX:
            raise WalletError("shard_unavailable", "too many transfers in flight; retry shortly")
        future: asyncio.Future[TransferResult] = asyncio.get_running_loop().create_future()
        self.inflight[transfer.transaction_id] = future
        try:
            result = await self._rerouting(lambda: self._route(transfer))
            future.set_result(result)
            return result
        except BaseException as error:
            future.set_exception(error)
            future.exception()  # mark retrieved: waiters, if any, re-raise it themselves
            raise
        finally:
            del self.inflight[transfer.transaction_id]

    @staticmethod
    def _check_same(transfer: Transfer, result: TransferResult) -> TransferResult:
        if result.transfer.request_hash != transfer.request_hash:
            raise WalletError(
                "idempotency_conflict",
                f"transaction_id {transfer.transaction_id} was already used for a different request",
            )
        return result

    def _applier_for(self, transfer: Transfer) -> BatchApplier[Transfer, TransferResult | str]:
        credit_shard = self.topology.shard_of(transfer.to_account)
        debit_shard = self.topology.shard_of(transfer.from_account) if transfer.from_account else credit_shard
        if debit_shard == credit_shard:
            return self.appliers[debit_shard]
        return self.cross_appliers[transfer.mode]

    async def _route(self, transfer: Transfer) -> TransferResult:
        try:
            outcome: TransferResult | str | BaseException = await self._applier_for(transfer).submit(transfer)
        except (ShardError, AccountsMoved) as error:
            outcome = error
        return self._settle(transfer, outcome)

    def _settle(self, transfer: Transfer, outcome: TransferResult | str | BaseException) -> TransferResult:
        """The answer for one transfer from its batch's outcome (raises what the caller sees)."""
        try:
            if isinstance(outcome, BaseException):  # its batch failed, or one step of it
                raise outcome
        except ShardError as error:
            raise WalletError(
                "shard_unavailable",
                f"shard {error.shard} did not answer; the outcome is unknown until you retry with the same transaction_id",
            ) from error
        if outcome == CONFLICT:
            raise WalletError(
                "idempotency_conflict",
                f"transaction_id {transfer.transaction_id} was already used for a different request",
            )
        assert isinstance(outcome, TransferResult)
        return self._check_same(transfer, outcome)

    async def _apply_local(self, shard: str, batch: list[Transfer]) -> list[TransferResult | str]:
        return await apply_local_batch(self.pools, shard, batch, lambda ids: self._find_elsewhere(set(), ids))

    async def _find_elsewhere(self, involved: set[str], transaction_ids: list[UUID]) -> dict[UUID, StoredTransfer]:
        """Prior records of the ids on every shard not in `involved` (an empty set: every
        shard), one query each, all at once. A record lives on its debit shard; one reused
        with another source account sits elsewhere. The one-shard and 2PC paths read every
        shard this way before their transaction; TC/C and Saga read their debit shards under
        the locks themselves."""
        others = [shard for shard in sorted(self.topology.shards) if shard not in involved]
        return await self._find_transfers(others, transaction_ids) if others else {}

    async def _find_transfers(self, shards: list[str], transaction_ids: list[UUID]) -> dict[UUID, StoredTransfer]:
        async def one(shard: str) -> dict[UUID, StoredTransfer]:
            lookup = self.lookups.get(shard)  # every shard of an open service has one
            assert lookup is not None, f"no record lookup for {shard}: the service is not open"
            return await lookup.submit(transaction_ids)  # shared with the other batches asking now

        found: dict[UUID, StoredTransfer] = {}
        try:
            for part in await asyncio.gather(*(one(shard) for shard in shards)):
                found.update(part)
        except ShardUnavailable as error:
            raise WalletError("shard_unavailable", f"shard {error.shard} did not answer; retry") from error
        return found
