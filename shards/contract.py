"""The shard as the protocols, recovery and the relay see it: one typed contract, two
implementations. shards/postgres.py is the product (today's SQL, one method per statement);
chaos/simulation/shard.py is an in-memory twin the deterministic simulator runs the same
protocol code over. tests/test_shard_contract.py runs one suite on both, so the twin keeps
PostgreSQL's semantics where the protocols depend on them:

- row locks are taken in account order and held to the transaction's end; a waiter reads
  the row as the holder left it; a wait longer than the lock timeout (the session's 5 s,
  a transaction's own at BEGIN, the probe's 100 ms) fails the statement, retryably;
- a unique key (a record, a barrier row, a phase-state row, a decision) inserted while an
  open or prepared transaction holds the same key waits for it: a duplicate once it
  commits, free once it rolls back;
- a statement that fails aborts its transaction: COMMIT of it rolls back;
- PREPARE detaches the transaction from the session: it survives the session and a crash
  of the server, with its locks, until COMMIT or ROLLBACK PREPARED by any session;
  finishing a gid that is already finished answers False;
- a COMMIT can land while its answer is lost (ShardUnavailable): the caller must treat the
  outcome as unknown and read it back;
- now() is the transaction's start; outbox event ids are given at insert, in insert order,
  so a transaction that commits later may hold lower ids.

Every method raises only ShardUnavailable (the server or session is gone: a write's outcome
is unknown), ShardRetryable (rolled back: retry from the start) or AccountsMoved.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import Protocol

from core.domain.accounts import Account
from core.domain.postings import AccountChange, BalanceEvent
from core.domain.transfers import RecordColumns, Transfer, TransferResult
from shards.phase_state import PhaseRow, PhaseUpdate
from shards.steps import BarrierRow, StepRead
from shards.two_phase import PreparedBranch

# An outbox row as the relay reads it: (event_id, account_id, version, moment, hashed), where
# moment is created_at in the chain's text form and hashed every hashed field after stream and
# position, \x1f between them (ledger/chain.py).
RelayRow = tuple[int, str, int, str, str]


class ShardSession(Protocol):
    """One session on one shard: at most one transaction open at a time."""

    shard: str

    def in_transaction(self) -> bool: ...

    # -- transactions -------------------------------------------------------------------------
    async def begin(self, lock_timeout_ms: int | None = None) -> None:
        """READ COMMITTED; with `lock_timeout_ms`, lock waits in it end sooner than the session's."""

    async def commit(self) -> None:
        """COMMIT (of an aborted transaction: a rollback). ShardUnavailable: it may have landed."""

    async def rollback(self) -> None:
        """ROLLBACK of the open transaction, if one is open."""

    async def prepare(self, gid: str) -> None:
        """PREPARE TRANSACTION: the open transaction leaves this session, kept under `gid`."""

    async def commit_prepared(self, gid: str) -> bool:
        """True if this call committed it; False if it was finished already (or is being finished)."""

    async def rollback_prepared(self, gid: str) -> bool: ...

    def forget_if_broken(self, error: BaseException) -> None:
        """After `error`, a broken session is never used again."""

    # -- balances, records, outbox -----------------------------------------------------------
    async def lock_accounts(self, account_ids: list[str]) -> dict[str, Account]:
        """Lock the accounts that exist, in id order; AccountsMoved if one is not live here."""

    async def write_batch(
        self,
        changes: dict[str, AccountChange],
        records: RecordColumns,
        events: list[BalanceEvent],
        commit_decision: str | None = None,
    ) -> datetime:
        """A planned batch's writes on locked accounts (with a batch id: its 'commit' decision);
        the records' created_at."""

    async def select_transfers(self, transaction_ids: list[str]) -> dict[str, TransferResult]: ...

    async def record_is_held(self, transaction_id: str) -> bool:
        """True if an unfinished transaction (open or prepared) holds this id's record."""

    # -- TC/C and Saga steps -----------------------------------------------------------------
    async def read_step(
        self, account_ids: list[str], transaction_ids: list[str], phases: bool = False, records: bool = False
    ) -> StepRead: ...

    async def write_step(
        self,
        changes: dict[str, AccountChange],
        records: RecordColumns,
        events: list[BalanceEvent],
        barrier: Sequence[BarrierRow],
        opened: Sequence[Transfer] = (),
        advanced: Sequence[PhaseUpdate] = (),
    ) -> datetime: ...

    async def select_phases(self, transaction_ids: list[str]) -> dict[str, PhaseRow]: ...

    async def select_unfinished(self, older_than_ms: int, limit: int) -> list[PhaseRow]: ...

    async def mark_done(self, transaction_ids: list[str]) -> None: ...

    # -- two-phase decisions -----------------------------------------------------------------
    async def decide_unless_decided(self, batch_id: str, outcome: str) -> str:
        """Record `outcome` unless a decision exists (waiting for an uncommitted one); the one that stands."""

    async def select_decisions(self, batch_ids: list[str]) -> dict[str, str]: ...

    async def prune_decisions(self, older_than_s: int, keep: list[str], limit: int) -> int: ...

    async def select_prepared(self) -> list[PreparedBranch]: ...

    # -- the relay's side --------------------------------------------------------------------
    async def select_relay_rows(self, limit: int) -> list[RelayRow]:
        """The outbox's first `limit` rows in event id order."""

    async def delete_relayed(self, event_ids: list[int]) -> None: ...


class Shards(Protocol):
    """Sessions on every shard of the topology."""

    def session(self, shard: str) -> AbstractAsyncContextManager[ShardSession]:
        """A session (autocommit until `begin`); an open transaction left at exit is rolled back."""

    def atomic(self, shard: str) -> AbstractAsyncContextManager[ShardSession]:
        """A session in a transaction: committed at exit, rolled back on an error."""
