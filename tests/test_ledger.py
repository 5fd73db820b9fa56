"""The event ledger: relay exactly once, replay == live, replay at past moments, snapshots,
tamper detection, and the audit naming what explains each difference."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest

from coordinator.service.wallet import WalletService
from core.domain.errors import WalletError
from core.runtime.settings import Settings
from launchers.postgres import LocalCluster
from ledger import health
from ledger.partitions import POOL_SIZE_MAX
from ledger.replay import END_OF_TIME
from shard_router.topology import FIRST_LEDGER, Topology
from tests.helpers import accounts_on, bearer, open_accounts

REPOSITORY = Path(__file__).resolve().parent.parent
SHARDS = ("shard0", "shard1", "shard2", "shard3")


async def live(service: WalletService, ids: list[str]) -> dict[str, tuple[int, int]]:
    states = {}
    for account_id in ids:
        account = await service.get_account(account_id)
        states[account_id] = (account.balance, account.reserved)
    return states


async def replayed(
    service: WalletService, ids: list[str], at: datetime = END_OF_TIME, use_snapshot: bool = True
) -> dict[str, tuple[int, int]]:
    assert service.ledger is not None
    replay = await service.ledger.replay(at, use_snapshot=use_snapshot)
    return {
        a: (replay.balances[a].balance, replay.balances[a].reserved) if a in replay.balances else (0, 0) for a in ids
    }


async def mixed_load(service: WalletService, ids: list[str], count: int, seed: int) -> None:
    rng = random.Random(seed)

    async def send() -> None:
        source, target = rng.sample(ids, 2)
        try:
            await service.transfer(
                source,
                target,
                f"{rng.randint(1, 900) / 100:.2f}",
                "USD",
                str(uuid.uuid4()),
                mode=rng.choice(["2pc", "tcc", "saga"]),
            )
        except WalletError:
            pass

    await asyncio.gather(*(send() for _ in range(count)))


async def test_replay_equals_live_after_mixed_load_and_at_past_moments(
    service: WalletService, topology: Topology
) -> None:
    """Thousands of transfers in every mode: the replay equals live balances; a replay at
    an earlier moment equals the balances that were live then, with or without a snapshot."""
    assert service.ledger is not None
    ids = [a for shard in SHARDS for a in accounts_on(topology, shard, 6)]
    await open_accounts(service, ids, deposit="80.00")
    await mixed_load(service, ids, 1500, seed=1)
    await service.ledger.drain()
    moment = datetime.now(UTC)
    then = await live(service, ids)
    await asyncio.sleep(0.05)
    await mixed_load(service, ids, 1500, seed=2)
    await service.ledger.drain()
    assert await replayed(service, ids) == await live(service, ids)
    assert await replayed(service, ids, at=moment) == then
    await service.ledger.snapshot(moment)
    assert await replayed(service, ids, at=moment) == then
    assert await replayed(service, ids) == await live(service, ids)
    assert await replayed(service, ids, use_snapshot=False) == await live(service, ids)
    report = await service.ledger.audit()
    mine = [d for d in report.differences if d.account_id in ids]
    assert mine == [] and report.breaks == []


async def test_relay_is_exactly_once_when_run_twice_at_once(
    service: WalletService, topology: Topology, settings
) -> None:
    """Two relays draining at once land every event once."""
    assert service.ledger is not None
    ids = [a for shard in SHARDS for a in accounts_on(topology, shard, 3)]
    await open_accounts(service, ids, deposit="10.00")
    await mixed_load(service, ids, 300, seed=3)
    async with WalletService(topology, settings) as other:
        assert other.ledger is not None
        await asyncio.gather(service.ledger.drain(), other.ledger.drain())
    assert await replayed(service, ids) == await live(service, ids)
    assert await service.ledger.verify() == []


async def test_a_new_relay_looks_up_every_stream_at_once_without_waiting_on_itself(
    service: WalletService, topology: Topology, settings
) -> None:
    """A relay that remembers no account (a process just started) relays every stream of a
    server at once, each looking up its accounts' earlier events while it holds its stream's
    head: more streams than the server's pool has connections, and nothing waits on itself."""
    assert service.ledger is not None
    ids = [a for shard in SHARDS for a in accounts_on(topology, shard, 3)]
    await open_accounts(service, ids, deposit="10.00")
    await service.ledger.drain()
    for account_id in ids:  # every stream has rows whose accounts' earlier versions are relayed
        await service.deposit(account_id, "1.00", str(uuid.uuid4()))
    async with WalletService(topology, settings) as other:
        assert other.ledger is not None
        assert len(other.ledger.partitions.holding("shard0").streams) >= POOL_SIZE_MAX
        assert await asyncio.wait_for(other.ledger.drain(), timeout=30) == len(ids)
    assert await replayed(service, ids) == await live(service, ids)
    assert await service.ledger.verify() == []


async def test_relay_killed_between_ledger_and_outbox(
    service: WalletService, topology: Topology, cluster: LocalCluster
) -> None:
    """The relay SIGKILLed after its ledger commit, before deleting the outbox rows: the
    restarted relay duplicates nothing and loses nothing."""
    assert service.ledger is not None
    await service.ledger.drain()
    ids = [a for shard in SHARDS for a in accounts_on(topology, shard, 3)]
    await open_accounts(service, ids, deposit="10.00")
    await mixed_load(service, ids, 200, seed=4)
    victim = subprocess.run(
        [sys.executable, "-m", "coordinator.cli.main", "ledger", "relay"],
        cwd=REPOSITORY,
        env={**os.environ, "WALLET_HOME": str(cluster.home), "WALLET_FAULT_POINT": "relay.after_ledger_commit"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert victim.returncode == -signal.SIGKILL, victim.stderr
    before = service.ledger.relay.duplicates_dropped if service.ledger.relay else 0
    await service.ledger.drain()
    assert service.ledger.relay is not None and service.ledger.relay.duplicates_dropped > before
    assert await replayed(service, ids) == await live(service, ids)
    assert await service.ledger.verify() == []


async def test_ledger_refuses_update_delete_truncate(topology: Topology) -> None:
    """History cannot be changed through SQL: the database refuses."""
    connection = await asyncpg.connect(topology.ledgers[FIRST_LEDGER].dsn)
    try:
        for statement in (
            "UPDATE ledger_events SET amount = amount + 1",
            "DELETE FROM ledger_events",
            "TRUNCATE ledger_events",
            "DELETE FROM ledger_snapshot_balances",
        ):
            with pytest.raises(asyncpg.PostgresError, match="append-only"):
                await connection.execute(statement)
    finally:
        await connection.close()


async def tamper(topology: Topology, statement: str, *arguments: object) -> None:
    """What an attacker with superuser rights could do: switch the guard off and edit."""
    connection = await asyncpg.connect(topology.ledgers[FIRST_LEDGER].dsn)
    try:
        async with connection.transaction():
            await connection.execute("ALTER TABLE ledger_events DISABLE TRIGGER ledger_events_append_only")
            await connection.execute(statement, *arguments)
            await connection.execute("ALTER TABLE ledger_events ENABLE TRIGGER ledger_events_append_only")
    finally:
        await connection.close()


async def test_edited_ledger_row_and_corrupted_balance_are_named(service: WalletService, topology: Topology) -> None:
    """An edited ledger event is named by verify and by the audit; a balance changed behind
    the ledger's back is named by the audit, with a non-zero exit."""
    assert service.ledger is not None
    (alice,), (bob,) = accounts_on(topology, "shard1", 1), accounts_on(topology, "shard2", 1)
    (carol,) = accounts_on(topology, "shard3", 1)
    await open_accounts(service, [alice, bob, carol], deposit="10.00")
    edited = await service.transfer(alice, bob, "1.00", "USD", str(uuid.uuid4()))
    await service.ledger.drain()

    await tamper(
        topology,
        "UPDATE ledger_events SET amount = amount * 2 WHERE transaction_id = $1 AND account_id = $2",
        edited.transfer.transaction_id,
        bob,
    )
    breaks = await service.ledger.verify()
    assert len(breaks) == 1 and breaks[0].transaction_id == edited.transfer.transaction_id
    assert "edited" in breaks[0].reason

    connection = await asyncpg.connect(topology.shards["shard3"])
    try:  # a balance changed outside the service: no event, no outbox row
        await connection.execute("UPDATE accounts SET balance = balance + 500 WHERE account_id = $1", carol)
    finally:
        await connection.close()
    report = await service.ledger.audit()
    assert not report.clean
    by_account = {d.account_id: d for d in report.differences}
    assert edited.transfer.transaction_id in by_account[bob].transactions and "edited" in by_account[bob].explanation
    assert by_account[carol].actual[0] - by_account[carol].expected[0] == 500
    assert "outside the ledger" in by_account[carol].explanation
    assert alice not in by_account
    # Put things back for the other tests.
    await tamper(
        topology,
        "UPDATE ledger_events SET amount = amount / 2 WHERE transaction_id = $1 AND account_id = $2",
        edited.transfer.transaction_id,
        bob,
    )
    connection = await asyncpg.connect(topology.shards["shard3"])
    try:
        await connection.execute("UPDATE accounts SET balance = balance - 500 WHERE account_id = $1", carol)
    finally:
        await connection.close()
    assert await service.ledger.verify() == []


async def test_removed_and_reordered_events_are_named(service: WalletService, topology: Topology) -> None:
    """Deleting an event or swapping two breaks the chain at a named position."""
    assert service.ledger is not None
    ids = accounts_on(topology, "shard0", 2)
    await open_accounts(service, ids, deposit="5.00")
    await service.ledger.drain()
    connection = await asyncpg.connect(topology.ledgers[FIRST_LEDGER].dsn)
    try:
        last = await connection.fetchval("SELECT max(position) FROM ledger_events WHERE stream = 'shard0'")
        row = await connection.fetchrow(
            "SELECT * FROM ledger_events WHERE stream = 'shard0' AND position = $1", last - 1
        )
    finally:
        await connection.close()
    await tamper(topology, "DELETE FROM ledger_events WHERE stream = 'shard0' AND position = $1", last - 1)
    breaks = await service.ledger.verify()
    assert [(b.stream, b.position) for b in breaks] == [("shard0", last)]
    assert row is not None
    columns = list(row.keys())
    await tamper(
        topology,
        f"INSERT INTO ledger_events ({', '.join(columns)}) VALUES "
        f"({', '.join(f'${i + 1}' for i in range(len(columns)))})",
        *row.values(),
    )
    assert await service.ledger.verify() == []


async def test_outbox_lag_is_explained_not_flagged(service: WalletService, topology: Topology) -> None:
    """Events not yet relayed explain a live/ledger difference: reported as lag with the
    transfers that explain it, not as an anomaly."""
    assert service.ledger is not None
    await service.ledger.drain()
    (alice,), (bob,) = accounts_on(topology, "shard2", 1), accounts_on(topology, "shard0", 1)
    await open_accounts(service, [alice, bob], deposit="3.00")
    moved = await service.transfer(alice, bob, "1.00", "USD", str(uuid.uuid4()))
    report = await service.ledger.audit()
    lagging = {d.account_id: d for d in report.lagging}
    assert moved.transfer.transaction_id in lagging[alice].transactions
    assert all(d.account_id not in (alice, bob) for d in report.differences)
    assert report.outbox_lag["shard2"][0] >= 1
    await service.ledger.drain()


async def test_history_and_balance_at_over_http(service: WalletService, topology: Topology, settings) -> None:
    """GET .../transactions pages an account's history; GET .../balance?at= replays it."""
    import httpx

    from coordinator.api.app import build_app

    assert service.ledger is not None
    alice, bob = accounts_on(topology, "shard1", 2)
    await open_accounts(service, [alice, bob], deposit="10.00")
    for _ in range(5):
        await service.transfer(alice, bob, "1.00", "USD", str(uuid.uuid4()))
    await service.ledger.drain()
    middle = datetime.now(UTC)
    await asyncio.sleep(0.05)
    await service.transfer(alice, bob, "2.00", "USD", str(uuid.uuid4()))
    await service.ledger.drain()
    app = build_app(settings, service=service)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://wallet.test", headers=bearer()
    ) as client:
        first = (await client.get(f"/v1/accounts/{alice}/transactions", params={"limit": 4})).json()
        assert [i["version"] for i in first["items"]] == [1, 2, 3, 4] and first["next_after_version"] == 4
        assert first["items"][0]["kind"] == "deposit" and first["items"][1]["amount"] == "-1.00"
        rest = (await client.get(f"/v1/accounts/{alice}/transactions", params={"after_version": 4, "limit": 4})).json()
        assert [i["version"] for i in rest["items"]] == [5, 6, 7] and rest["next_after_version"] is None
        assert rest["items"][-1]["balance_after"] == "3.00"
        then = (await client.get(f"/v1/accounts/{alice}/balance", params={"at": middle.isoformat()})).json()
        assert then["balance"] == "5.00" and then["version"] == 6
        before = (await client.get(f"/v1/accounts/{alice}/balance", params={"at": "2000-01-01T00:00:00Z"})).json()
        assert before["balance"] == "0.00"
        for bad in ({"at": "yesterday"}, {"at": "2026-01-01T00:00:00"}, {}):
            response = await client.get(f"/v1/accounts/{alice}/balance", params=bad)
            assert response.status_code == 422 and response.json()["code"] == "validation_error"
        response = await client.get(f"/v1/accounts/{alice}/transactions", params={"limit": 100_000})
        assert response.status_code == 422


def test_ledger_cli(cluster: LocalCluster) -> None:
    """`wallet ledger relay|verify|snapshot|replay|audit` run and tell the truth."""
    environment = {**os.environ, "WALLET_HOME": str(cluster.home)}

    def wallet(*arguments: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "coordinator.cli.main", *arguments],
            cwd=REPOSITORY,
            env=environment,
            capture_output=True,
            text=True,
            timeout=120,
        )

    opened = wallet("accounts", "create", "replayed", "--owner", "replayed", "--currency", "EUR")
    assert opened.returncode == 0, opened.stderr
    deposit = wallet("deposit", "replayed", "7.00")
    assert deposit.returncode == 0, deposit.stderr
    assert wallet("ledger", "relay").returncode == 0
    one = wallet("ledger", "replay", "--account", "replayed")
    # the account's events are counted beside its version (not "0 events")
    assert one.returncode == 0 and ": 1 event replayed" in one.stdout and "version 1" in one.stdout, one.stdout
    verify = wallet("ledger", "verify")
    assert verify.returncode == 0 and "intact" in verify.stdout
    assert wallet("ledger", "snapshot").returncode == 0
    replay = wallet("ledger", "replay", "--at", "2000-01-01T00:00:00Z")
    assert replay.returncode == 0 and "balances at 2000-01-01" in replay.stdout
    bad = wallet("ledger", "replay", "--at", "noon")
    assert bad.returncode != 0 and "RFC 3339" in bad.stderr
    audit = wallet("ledger", "audit")
    assert "audited" in audit.stdout


async def test_the_relay_verifies_the_ledger_by_itself_and_records_it(topology: Topology, settings: Settings) -> None:
    """Protects what WalletLedgerVerificationStale watches: a relay process verifies the whole
    ledger every WALLET_LEDGER_VERIFY_S and records the result on each ledger server, where
    /metrics reads it."""
    started = time.time()
    relay = await WalletService(topology, dataclasses.replace(settings, ledger_verify_s=1)).open(run_relay=True)
    try:
        assert relay.ledger is not None
        partitions = relay.ledger.partitions
        deadline = time.monotonic() + 30
        while True:
            found = {}
            for name in partitions.names():
                async with partitions[name].connection() as connection:
                    found[name] = await health.latest_verification(connection)
            if all(v is not None and v.finished_at_s >= started for v in found.values()):
                break
            assert time.monotonic() < deadline, f"no verification recorded by the relay: {found}"
            await asyncio.sleep(0.2)
        assert all(v is not None and v.events >= 0 for v in found.values())
    finally:
        await relay.close()
