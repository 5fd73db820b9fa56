"""The shard contract (shards/contract.py), one suite run on PostgreSQL and on the simulator's
twin (chaos/simulation/shard.py): what the protocols depend on, held the same on both, so a
run of the simulator says something about the product."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from uuid import uuid4

import pytest

from chaos.simulation.shard import SimulatedSession, SimulatedShard, SimulatedShards
from chaos.simulation.shard import moment as chain_moment
from core.domain.postings import AccountChange, BalanceEvent
from core.domain.transfers import RecordColumns, Transfer
from launchers.postgres import LocalCluster
from shards.contract import Shards, ShardSession
from shards.errors import ShardRetryable
from shards.phase_state import PhaseUpdate
from shards.pool import ShardPools
from shards.postgres import PostgresSession, PostgresShards
from shards.two_phase import make_gid

SHARD = "shard0"
SHORT_LOCK_MS = 100


@dataclass
class Harness:
    """The shard under test, and what a test needs beside the contract: accounts to start from."""

    shards: Shards
    add: Any  # async (account_id, balance) -> None

    async def account(self, balance: int = 1000) -> str:
        account_id = f"contract-{uuid4().hex[:12]}"
        await self.add(account_id, balance)
        return account_id


@pytest.fixture(params=["simulated", pytest.param("postgres", marks=pytest.mark.cluster)])
def backend(request: pytest.FixtureRequest) -> str | None:
    """None for the simulated shard; else a PostgreSQL shard's DSN (the test cluster's)."""
    if request.param == "simulated":
        return None
    cluster: LocalCluster = request.getfixturevalue("cluster")
    return cluster.topology.shards[SHARD]


@pytest.fixture
async def harness(backend: str | None) -> AsyncIterator[Harness]:
    if backend is None:
        shard = SimulatedShard(SHARD, asyncio.get_running_loop().time)

        async def add_simulated(account_id: str, balance: int) -> None:
            shard.create_account(account_id, "USD", balance)

        yield Harness(SimulatedShards({SHARD: shard}), add_simulated)
        return
    pools = ShardPools({SHARD: backend}, size_max=6)
    await pools.open()

    async def add_postgres(account_id: str, balance: int) -> None:
        async with pools.connection(SHARD) as connection:
            await connection.execute(
                "INSERT INTO accounts (account_id, owner, currency, balance) VALUES ($1, 'contract', 'USD', $2)",
                account_id,
                balance,
            )

    try:
        yield Harness(PostgresShards(pools), add_postgres)
    finally:
        await pools.close()


def deposit(
    account_id: str, amount: int, balance_before: int, version_before: int = 0
) -> tuple[dict[str, AccountChange], RecordColumns, list[BalanceEvent]]:
    """A one-account deposit's writes: (changes, records, events)."""
    transaction_id = str(uuid4())
    transfer = Transfer(transaction_id, "deposit", None, account_id, amount, "USD", "local")
    changes = {account_id: AccountChange(amount, 0, 1)}
    records = RecordColumns([transfer], ["local"], ["success"], ["committed"], [None])
    event = BalanceEvent(
        transaction_id, account_id, version_before + 1, "deposit", amount, 0, balance_before + amount, 0, "USD"
    )
    return changes, records, [event]


def lose(session: ShardSession) -> None:
    """The session's connection is gone (the server sees it close)."""
    if isinstance(session, PostgresSession):
        session.connection.terminate()
    else:
        assert isinstance(session, SimulatedSession)
        session.lose()


async def test_a_batch_written_is_read_back_whole(harness: Harness) -> None:
    """A write lands whole at COMMIT: balance, version, record (stamped with the transaction's
    start) and the outbox row the relay reads, in the chain's text."""
    account = await harness.account(1000)
    changes, records, events = deposit(account, 250, 1000)
    async with harness.shards.atomic(SHARD) as session:
        locked = await session.lock_accounts([account, "contract-missing"])
        assert list(locked) == [account] and locked[account].balance == 1000
        created_at = await session.write_batch(changes, records, events)
    async with harness.shards.session(SHARD) as session:
        assert (await session.lock_accounts([account]))[account][3:] == (1250, 0, "active", 1)
        found = await session.select_transfers([records.transfers[0].transaction_id])
        [record] = found.values()
        assert record.status == "success" and record.created_at == created_at
        rows = [r for r in await session.select_relay_rows(100_000) if r[1] == account]
    [(event_id, account_id, version, moment, hashed)] = rows
    assert (account_id, version) == (account, 1)
    assert moment == chain_moment(created_at)  # the outbox row's created_at is the record's: now()
    assert hashed.split("\x1f") == [
        str(event_id),
        events[0].transaction_id,
        account,
        "1",
        "deposit",
        "250",
        "0",
        "1250",
        "0",
        "USD",
        moment,
    ]
    async with harness.shards.session(SHARD) as session:
        await session.delete_relayed([event_id])
        assert not [r for r in await session.select_relay_rows(100_000) if r[1] == account]


async def test_a_lock_wait_ends_at_the_lock_timeout_and_a_waiter_reads_what_the_holder_left(
    harness: Harness,
) -> None:
    """Row locks: a second locker waits; past its lock timeout it fails, retryably; a waiter
    granted the lock sees the holder's committed write, not the row as it was."""
    account = await harness.account(1000)
    async with harness.shards.session(SHARD) as holder, harness.shards.session(SHARD) as other:
        await holder.begin()
        await holder.lock_accounts([account])
        await other.begin(lock_timeout_ms=SHORT_LOCK_MS)
        with pytest.raises(ShardRetryable):
            await other.lock_accounts([account])
        await other.rollback()

        await other.begin()
        waiting = asyncio.ensure_future(other.lock_accounts([account]))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        await holder.write_batch(*deposit(account, 5, 1000))
        await holder.commit()
        assert (await waiting)[account].balance == 1005
        await other.rollback()


async def test_a_record_inserted_by_an_open_transaction_makes_the_same_insert_wait(harness: Harness) -> None:
    """Unique keys: the same transaction id written by two transactions: the second waits for
    the first; a duplicate (retryable) once the first commits, free once it rolls back. A
    failed statement aborts its transaction: COMMIT of it writes nothing."""
    account = await harness.account(1000)
    changes, records, events = deposit(account, 10, 1000)
    _, _, other_events = deposit(account, 10, 1000)
    async with harness.shards.session(SHARD) as first, harness.shards.session(SHARD) as second:
        await first.begin()
        await first.lock_accounts([account])
        await first.write_batch(changes, records, events)
        await second.begin(lock_timeout_ms=SHORT_LOCK_MS)
        with pytest.raises(ShardRetryable):  # waits on the open record, then times out
            await second.write_batch({}, records, [])
        await second.rollback()
        await first.rollback()

        await second.begin()
        await second.lock_accounts([account])
        await second.write_batch(changes, records, other_events)  # free now
        await second.commit()

        await first.begin()
        with pytest.raises(ShardRetryable):  # a duplicate of a committed record
            await first.write_batch({}, records, [])
        await first.commit()  # the aborted transaction rolls back
        found = await first.select_transfers([records.transfers[0].transaction_id])
        assert len(found) == 1
        assert (await first.lock_accounts([account]))[account].balance == 1010


async def test_a_prepared_transaction_outlives_its_session_with_its_locks(harness: Harness) -> None:
    """PREPARE detaches the transaction: after its session is gone it is listed, holds its row
    locks and its record (in doubt), and any session finishes it once; finishing it again, or
    a gid never prepared, answers False. An open transaction dies with its session."""
    account = await harness.account(1000)
    changes, records, events = deposit(account, 40, 1000)
    batch_id = str(uuid4())
    gid = make_gid(batch_id, SHARD, SHARD)
    async with harness.shards.session(SHARD) as preparing:
        await preparing.begin()
        await preparing.lock_accounts([account])
        await preparing.write_batch(changes, records, events)
        await preparing.prepare(gid)
        assert not preparing.in_transaction()
    async with harness.shards.session(SHARD) as session:
        listed = [b for b in await session.select_prepared() if b.gid == gid]
        assert [(b.batch_id, b.decision_shard, b.branch_shard) for b in listed] == [(batch_id, SHARD, SHARD)]
        assert await session.record_is_held(records.transfers[0].transaction_id)
        await session.begin(lock_timeout_ms=SHORT_LOCK_MS)
        with pytest.raises(ShardRetryable):
            await session.lock_accounts([account])
        await session.rollback()
        assert await session.commit_prepared(gid) is True
        assert await session.commit_prepared(gid) is False
        assert await session.rollback_prepared(make_gid(str(uuid4()), SHARD, SHARD)) is False
        assert not await session.record_is_held(records.transfers[0].transaction_id)
        assert (await session.lock_accounts([account]))[account].balance == 1040

    async with harness.shards.session(SHARD) as dying:
        await dying.begin()
        await dying.lock_accounts([account])
        await dying.write_batch(*deposit(account, 1, 1040, 1))
        lose(dying)
    async with harness.shards.session(SHARD) as session:
        await session.begin(lock_timeout_ms=1000)
        assert (await session.lock_accounts([account]))[account].balance == 1040  # rolled back, lock free
        await session.rollback()


async def test_a_decision_is_recorded_once_and_a_fence_waits_for_an_open_one(harness: Harness) -> None:
    """decide_unless_decided: the first decision stands; one asked while a batch's 'commit' is
    written but not committed waits for it, and then finds it."""
    async with harness.shards.session(SHARD) as session:
        fenced = str(uuid4())
        assert await session.decide_unless_decided(fenced, "abort") == "abort"
        assert await session.decide_unless_decided(fenced, "commit") == "abort"
        assert await session.select_decisions([fenced]) == {fenced: "abort"}

    account = await harness.account(1000)
    batch_id = str(uuid4())
    async with harness.shards.session(SHARD) as coordinator, harness.shards.session(SHARD) as recovery:
        await coordinator.begin()
        await coordinator.lock_accounts([account])
        changes, records, events = deposit(account, 1, 1000)
        await coordinator.write_batch(changes, records, events, commit_decision=batch_id)
        fence = asyncio.ensure_future(recovery.decide_unless_decided(batch_id, "abort"))
        await asyncio.sleep(0.05)
        assert not fence.done()
        await coordinator.commit()
        assert await fence == "commit"


async def test_steps_keep_phase_state_and_the_barrier(harness: Harness) -> None:
    """The TC/C and Saga steps' rows: a phase-state row opened, moved on and marked done; it is
    unfinished until done; a barrier row is read back and inserted once."""
    sender, receiver = await harness.account(1000), await harness.account(0)
    transfer = Transfer(str(uuid4()), "transfer", sender, receiver, 30, "USD", "tcc")
    tid = transfer.transaction_id
    async with harness.shards.atomic(SHARD) as session:
        read = await session.read_step([sender], [tid], phases=True, records=True)
        assert read.phases == {} and read.records == {} and read.barrier == {}
        await session.write_step(
            {sender: AccountChange(0, 30, 1)},
            RecordColumns([], [], [], [], []),
            [BalanceEvent(tid, sender, 1, "hold", 0, 30, 1000, 30, "USD")],
            [(tid, "debit", "try", "try")],
            opened=[transfer],
        )
    await asyncio.sleep(0.01)
    async with harness.shards.session(SHARD) as session:
        phase = (await session.select_phases([tid]))[tid]
        assert (phase.transfer, phase.second_phase) == (transfer, None)
        assert tid in [p.transfer.transaction_id for p in await session.select_unfinished(0, 100_000)]
        read = await session.read_step([sender], [tid])
        assert read.barrier == {(tid, "debit", "try"): "try"} and read.accounts[sender].reserved == 30
        await session.begin()
        with pytest.raises(ShardRetryable):
            await session.write_step({}, RecordColumns([], [], [], [], []), [], [(tid, "debit", "try", "try")])
        await session.rollback()
        await session.mark_done([tid])  # no decision yet: not done
        assert (await session.select_phases([tid]))[tid].second_state != "done"
    async with harness.shards.atomic(SHARD) as session:
        await session.read_step([sender], [tid], phases=True)
        await session.write_step(
            {},
            RecordColumns([], [], [], [], []),
            [],
            [],
            advanced=[PhaseUpdate(tid, "confirm", "sent", None, False)],
        )
    async with harness.shards.session(SHARD) as session:
        assert (await session.select_phases([tid]))[tid].second_phase == "confirm"
        await session.mark_done([tid])
        assert (await session.select_phases([tid]))[tid].second_state == "done"
        assert tid not in [p.transfer.transaction_id for p in await session.select_unfinished(0, 100_000)]
