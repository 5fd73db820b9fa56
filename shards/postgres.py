"""The shard contract (shards/contract.py) on PostgreSQL: each method one statement of the
SQL modules beside it, on a connection a shard's pool lends, driver errors translated by
errors_of. Nothing here decides anything: the statements are today's, unchanged."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime

from core.domain.accounts import Account
from core.domain.postings import AccountChange, BalanceEvent
from core.domain.transfers import RecordColumns, Transfer, TransferResult
from shards import accounts as account_sql
from shards import outbox as outbox_sql
from shards import phase_state as phase_sql
from shards import steps as step_sql
from shards import transfers as transfer_sql
from shards import two_phase as two_phase_sql
from shards.contract import RelayRow
from shards.phase_state import PhaseRow, PhaseUpdate
from shards.pool import Connection, ShardPools, errors_of, forget_if_broken
from shards.steps import BarrierRow, StepRead
from shards.two_phase import PreparedBranch


class PostgresSession:
    def __init__(self, shard: str, connection: Connection) -> None:
        self.shard = shard
        self.connection = connection

    def in_transaction(self) -> bool:
        return self.connection.is_in_transaction()

    async def begin(self, lock_timeout_ms: int | None = None) -> None:
        with errors_of(self.shard):
            await two_phase_sql.begin(self.connection, lock_timeout_ms)

    async def commit(self) -> None:
        with errors_of(self.shard):
            await two_phase_sql.commit(self.connection)

    async def rollback(self) -> None:
        with errors_of(self.shard):
            await two_phase_sql.rollback(self.connection)

    async def prepare(self, gid: str) -> None:
        with errors_of(self.shard):
            await two_phase_sql.prepare(self.connection, gid)

    async def commit_prepared(self, gid: str) -> bool:
        with errors_of(self.shard):
            return await two_phase_sql.commit_prepared(self.connection, gid)

    async def rollback_prepared(self, gid: str) -> bool:
        with errors_of(self.shard):
            return await two_phase_sql.rollback_prepared(self.connection, gid)

    def forget_if_broken(self, error: BaseException) -> None:
        forget_if_broken(self.connection, error)

    async def lock_accounts(self, account_ids: list[str]) -> dict[str, Account]:
        with errors_of(self.shard):
            return await account_sql.lock_accounts(self.connection, account_ids)

    async def write_batch(
        self,
        changes: dict[str, AccountChange],
        records: RecordColumns,
        events: list[BalanceEvent],
        commit_decision: str | None = None,
    ) -> datetime:
        with errors_of(self.shard):
            return await transfer_sql.write_batch(self.connection, changes, records, events, commit_decision)

    async def select_transfers(self, transaction_ids: list[str]) -> dict[str, TransferResult]:
        with errors_of(self.shard):
            return await transfer_sql.select_transfers(self.connection, transaction_ids)

    async def record_is_held(self, transaction_id: str) -> bool:
        with errors_of(self.shard):
            return await transfer_sql.record_is_held(self.connection, transaction_id)

    async def read_step(
        self, account_ids: list[str], transaction_ids: list[str], phases: bool = False, records: bool = False
    ) -> StepRead:
        with errors_of(self.shard):
            return await step_sql.read_step(self.connection, account_ids, transaction_ids, phases, records)

    async def write_step(
        self,
        changes: dict[str, AccountChange],
        records: RecordColumns,
        events: list[BalanceEvent],
        barrier: Sequence[BarrierRow],
        opened: Sequence[Transfer] = (),
        advanced: Sequence[PhaseUpdate] = (),
    ) -> datetime:
        with errors_of(self.shard):
            return await step_sql.write_step(self.connection, changes, records, events, barrier, opened, advanced)

    async def select_phases(self, transaction_ids: list[str]) -> dict[str, PhaseRow]:
        with errors_of(self.shard):
            return await phase_sql.select_phases(self.connection, transaction_ids)

    async def select_unfinished(self, older_than_ms: int, limit: int) -> list[PhaseRow]:
        with errors_of(self.shard):
            return await phase_sql.select_unfinished(self.connection, older_than_ms, limit)

    async def mark_done(self, transaction_ids: list[str]) -> None:
        with errors_of(self.shard):
            await phase_sql.mark_done(self.connection, transaction_ids)

    async def decide_unless_decided(self, batch_id: str, outcome: str) -> str:
        with errors_of(self.shard):
            return await two_phase_sql.decide_unless_decided(self.connection, batch_id, outcome)

    async def select_decisions(self, batch_ids: list[str]) -> dict[str, str]:
        with errors_of(self.shard):
            return await two_phase_sql.select_decisions(self.connection, batch_ids)

    async def prune_decisions(self, older_than_s: int, keep: list[str], limit: int) -> int:
        with errors_of(self.shard):
            return await two_phase_sql.prune_decisions(self.connection, older_than_s, keep, limit)

    async def select_prepared(self) -> list[PreparedBranch]:
        with errors_of(self.shard):
            return await two_phase_sql.select_prepared(self.connection)

    async def select_relay_rows(self, limit: int) -> list[RelayRow]:
        with errors_of(self.shard):
            return await outbox_sql.select_relay_rows(self.connection, limit)

    async def delete_relayed(self, event_ids: list[int]) -> None:
        with errors_of(self.shard):
            await outbox_sql.delete_relayed(self.connection, event_ids)


class PostgresShards:
    """Sessions on connections the shards' pools lend."""

    def __init__(self, pools: ShardPools) -> None:
        self.pools = pools

    @asynccontextmanager
    async def session(self, shard: str) -> AsyncIterator[PostgresSession]:
        async with self.pools.connection(shard) as connection:
            yield PostgresSession(shard, connection)

    @asynccontextmanager
    async def atomic(self, shard: str) -> AsyncIterator[PostgresSession]:
        async with self.pools.transaction(shard) as connection:
            yield PostgresSession(shard, connection)
