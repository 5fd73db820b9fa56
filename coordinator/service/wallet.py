"""WalletService: where a request becomes a routed, batched, recorded transfer.

  validate (domain/validation.py) -> submission.py: in flight once, into the queue
    -> rounds.py: what waits is applied together, one round; within it, a group per shard
                  for one-shard transfers -> protocols/one_shard.py, and a group per
                  cross-shard protocol -> protocols/two_phase.py, tcc.py or saga.py
  outcome (domain/outcomes.py) -> the caller's answer

This module puts the parts together and owns their lifecycle; each part is its own module.
"""

from __future__ import annotations

from collections.abc import Callable

from coordinator.protocols.one_shard import OneShard
from coordinator.protocols.recovery import ABORT_AFTER_MS_DEFAULT, Recovery, RecoveryReport, recovery_worker
from coordinator.protocols.saga import SagaCoordinator
from coordinator.protocols.tcc import TccCoordinator
from coordinator.protocols.two_phase import TwoPhaseCommit
from coordinator.service.accounts import Accounts
from coordinator.service.group_commit import BatchObserver
from coordinator.service.inflight import InFlight
from coordinator.service.record_lookup import RecordLookups
from coordinator.service.rounds import Rounds
from coordinator.service.routing import Router
from coordinator.service.status import TransferStatus
from coordinator.service.submission import Submission
from core.domain import validation
from core.domain.accounts import Account, AccountStatus
from core.domain.errors import ConfigurationError, WalletError
from core.domain.limits import TRANSFERS_PER_REQUEST_MAX
from core.domain.money import check_currency
from core.domain.transfers import Transfer, TransferResult
from core.runtime.background import Periodic
from core.runtime.fan_out import fan_out
from core.runtime.settings import Settings
from ledger.anchors import ZooKeeperAnchors
from ledger.service import Anchoring, LedgerService
from shard_router.stores import TopologyStore
from shard_router.topology import Topology
from shard_router.zookeeper_store import ZooKeeperTopologyStore
from shards import replication
from shards.pool import ShardPools, StatementObserver
from shards.postgres import PostgresShards


class WalletService:
    def __init__(
        self,
        topology: Topology,
        settings: Settings,
        store: TopologyStore | None = None,
        is_leader: Callable[[], bool] = lambda: True,
        statement_observer: StatementObserver | None = None,
    ) -> None:
        self.settings = settings
        # Whether this process runs the singletons (recovery worker, ledger relay) now.
        self.is_leader = is_leader
        self.pools = ShardPools(topology.shards, size_max=settings.pool_size_max, statement_observer=statement_observer)
        self.router = Router(topology, self.pools, store)
        self.shards = PostgresShards(self.pools)  # the shard contract the protocols call (shards/contract.py)
        self.records = RecordLookups(self.shards, lambda: self.router.topology.shards)
        current = lambda: self.router.topology  # noqa: E731 (the protocols route by the newest)
        self.one_shard = OneShard(self.shards)
        self.two_phase = TwoPhaseCommit(self.shards, current)
        self.tcc = TccCoordinator(self.shards, current)
        self.saga = SagaCoordinator(self.shards, current)
        self.rounds = Rounds(
            settings.limits,
            self.records,
            current,
            self.one_shard.apply_batch,
            {"2pc": self.two_phase.apply_batch, "tcc": self.tcc.apply_batch, "saga": self.saga.apply_batch},
        )
        self.inflight = InFlight()
        self.submission = Submission(self.router, self.rounds, self.inflight)
        self.accounts = Accounts(self.router, self.pools)
        self.status = TransferStatus(self.router, self.shards, self.records, self.inflight)
        self.recovery = Recovery(self.shards, self.router.shards, [self.tcc, self.saga])
        self.recovery_worker: Periodic | None = None
        self.ledger = (
            LedgerService(topology.ledgers, self.pools, sorted(topology.shards), self._anchoring(settings, store))
            if topology.ledgers
            else None
        )
        self.router.on_shard_added.append(self.records.add_shard)
        if self.ledger is not None:
            self.router.on_switch.append(self.ledger.follow)

    @staticmethod
    def _anchoring(settings: Settings, store: TopologyStore | None) -> Anchoring:
        """Checkpoints go to the anchor file and, when the topology lives in ZooKeeper, beside it."""
        client = getattr(store, "client", None) if isinstance(store, ZooKeeperTopologyStore) else None
        return Anchoring(
            settings.ledger_key_path,
            settings.ledger_anchor_path,
            ZooKeeperAnchors(client, settings.zk_root) if client is not None else None,
            settings.ledger_checkpoint_s,
            settings.ledger_verify_s,
        )

    @property
    def topology(self) -> Topology:
        return self.router.topology

    # -- lifecycle ---------------------------------------------------------------------------
    async def open(self, run_recovery: bool = False, run_relay: bool = False) -> WalletService:
        await self.pools.open()
        try:
            await self._check_two_phase_ready()
        except ConfigurationError:
            await self.pools.close()
            raise
        if self.ledger is not None:
            await self.ledger.open(run_relay=run_relay, gate=self.is_leader)
        for shard in self.router.shards():
            self.records.add_shard(shard)
        self.rounds.start()
        if run_recovery:
            self.recovery_worker = recovery_worker(self.recover, gate=self.is_leader)
            self.recovery_worker.start()
        return self

    async def _check_two_phase_ready(self) -> None:
        """Every shard's servers can hold prepared transactions, the same number on every member
        of a replicated shard (shards/replication.py). A shard that does not answer is not
        refused here: it is unavailable, and says so when used."""

        async def one(shard: str) -> None:
            async with self.pools.connection(shard) as connection:
                await replication.check_two_phase_ready(shard, self.pools.dsns[shard], connection)

        checked = await fan_out(sorted(self.pools.dsns), one)
        for error in checked.errors.values():
            if isinstance(error, ConfigurationError):
                raise error

    async def close(self) -> None:
        if self.recovery_worker is not None:
            await self.recovery_worker.stop()
            self.recovery_worker = None
        await self.rounds.stop()
        await self.records.stop()
        if self.ledger is not None:
            await self.ledger.close()
        await self.pools.close()

    async def __aenter__(self) -> WalletService:
        return await self.open()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def observe_batches(self, observer: BatchObserver) -> None:
        """`observer(name, size)` for every round ("round") and each of its groups (a shard's
        one-shard transfers, by the shard's name; a cross-shard protocol's, by its mode)."""
        self.rounds.observe(observer)

    # -- topology ----------------------------------------------------------------------------
    async def switch_topology(self, topology: Topology) -> bool:
        return await self.router.switch(topology)

    async def refresh_topology(self) -> bool:
        return await self.router.refresh()

    async def recover(self, abort_after_ms: int = ABORT_AFTER_MS_DEFAULT) -> RecoveryReport:
        """One pass: finish two-phase batches left prepared, then drive unfinished TC/C and
        Saga transfers (untouched for `abort_after_ms`) to their end."""
        return await self.recovery.run_once(abort_after_ms)

    # -- accounts --------------------------------------------------------------------------
    async def create_account(self, account_id: str, owner: str, currency: str) -> tuple[Account, bool]:
        """(account, created). Creating the same account twice is a no-op; a different one is a conflict."""
        return await self.accounts.create(
            validation.check_account_id(account_id), validation.check_owner(owner), check_currency(currency)
        )

    async def get_account(self, account_id: str) -> Account:
        return await self.accounts.get(validation.check_account_id(account_id))

    async def set_account_status(self, account_id: str, status: AccountStatus) -> Account:
        return await self.accounts.set_status(validation.check_account_id(account_id), status)

    async def totals(self) -> tuple[int, int, int]:
        return await self.accounts.totals()

    # -- money movement ----------------------------------------------------------------------
    async def deposit(
        self, account_id: str, amount: str, transaction_id: str, currency: str | None = None
    ) -> TransferResult:
        """Money enters from outside. Idempotent on transaction_id. With a currency (the API
        states one), a deposit in another currency than the account's is refused and recorded
        (currency_mismatch); without, it is the account's."""
        if currency is None:
            currency = (await self.get_account(account_id)).currency
        return await self.submission.submit(validation.deposit_request(account_id, amount, currency, transaction_id))

    async def submit(self, transfer: Transfer) -> TransferResult:
        """A transfer or deposit already checked (the API decodes requests into these)."""
        return await self.submission.submit(transfer)

    async def transfer(
        self,
        from_account: str,
        to_account: str,
        amount: str,
        currency: str,
        transaction_id: str,
        mode: str | None = None,
    ) -> TransferResult:
        return await self.submission.submit(
            validation.transfer_request(
                from_account, to_account, amount, currency, transaction_id, mode, self.settings.default_mode
            )
        )

    async def submit_many(self, transfers: list[Transfer]) -> list[TransferResult | WalletError]:
        """Many checked transfers at once, each with its own outcome."""
        return await self.submission.submit_many(transfers)

    async def transfer_many(self, items: list[dict[str, str]]) -> list[TransferResult | WalletError]:
        """Many transfers at once, each with its own outcome: a bad item fails alone."""
        assert len(items) <= TRANSFERS_PER_REQUEST_MAX, f"at most {TRANSFERS_PER_REQUEST_MAX} transfers per call"
        answers: list[TransferResult | WalletError | None] = [None] * len(items)
        valid = []
        for index, item in enumerate(items):
            try:
                valid.append(
                    (
                        index,
                        validation.transfer_request(
                            item.get("from_account"),
                            item.get("to_account"),
                            item.get("amount"),
                            item.get("currency"),
                            item.get("transaction_id"),
                            item.get("mode"),
                            self.settings.default_mode,
                        ),
                    )
                )
            except WalletError as error:
                answers[index] = error
        for (index, _), answer in zip(valid, await self.submission.submit_many([t for _, t in valid]), strict=True):
            answers[index] = answer
        assert all(answer is not None for answer in answers), "every item has an answer"
        return [answer for answer in answers if answer is not None]

    # -- where a transfer stands -------------------------------------------------------------
    async def get_transfer(self, transaction_id: str) -> TransferResult:
        return await self.status.recorded(validation.check_transaction_id(transaction_id))

    async def find_progress(self, transaction_id: str) -> str | None:
        """The phase of a TC/C or Saga transfer that has started but has no record yet."""
        return await self.status.progress(validation.check_transaction_id(transaction_id))

    async def in_doubt(self, transaction_id: str) -> bool:
        return await self.status.in_doubt(validation.check_transaction_id(transaction_id))

    def in_flight(self, transaction_id: str) -> bool:
        try:
            transaction: str = validation.check_transaction_id(transaction_id)
        except WalletError:
            return False
        return self.status.in_flight(transaction)
