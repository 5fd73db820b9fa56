"""High availability on real processes: two shards and the ledger, each a Patroni cluster of a
primary and a synchronous standby on a real ZooKeeper (launchers/patroni.py). Primaries are
SIGKILLed under load, while 2PC branches are prepared and right after a commit decision; the
standby is promoted, nothing acknowledged is lost, recovery finishes every branch by its
decision, the old primary rejoins as a standby and refuses writes."""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from bench import failover
from coordinator.api.app import build_app
from coordinator.api.metrics import Metrics
from coordinator.service.wallet import WalletService
from core.domain.errors import WalletError
from core.runtime.settings import Settings
from launchers.patroni import HaCluster
from launchers.postgres import LEDGER, is_ledger, temporary_home
from shard_router.topology import Topology
from shards import migrate, replication
from tests.helpers import (
    TEST_SECRET,
    accounts_on,
    assert_outbox_explains,
    bearer,
    cross_shard_transfers,
    expected_after_all_once,
    kill_at,
    open_accounts,
    prepared_count,
    reserved_of,
    retry_until_known,
    sample,
    unfinished_phases,
)

REPOSITORY = Path(__file__).resolve().parent.parent
SHARDS = ("shard0", "shard1")
RECOVERY_ATTEMPTS = 60


@pytest.fixture(scope="module")
def ha() -> Iterator[HaCluster]:
    home = temporary_home("ha")
    cluster = HaCluster(home, shard_count=len(SHARDS), members=2, ledger=True, ledgers=2)
    try:
        topology = cluster.start()
        migrate.upgrade_all(topology)
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def ha_settings(ha: HaCluster) -> Settings:
    return Settings(home=ha.home, topology_path=ha.topology_path, auth_secret=TEST_SECRET)


@pytest.fixture
async def ha_service(ha: HaCluster, ha_settings: Settings) -> AsyncIterator[WalletService]:
    for name in ha.names:
        await asyncio.to_thread(ha.wait_healthy, name)
    service = await WalletService(ha.topology, ha_settings).open()
    try:
        yield service
    finally:
        await service.close()


@pytest.fixture
async def ha_serving(ha: HaCluster, ha_settings: Settings) -> AsyncIterator[WalletService]:
    """As `wallet serve` runs: the recovery worker on, finishing what a failover cut off
    (a branch prepared on one shard whose decision shard died mid-decision) while the load
    goes on."""
    for name in ha.names:
        await asyncio.to_thread(ha.wait_healthy, name)
    service = await WalletService(ha.topology, ha_settings).open(run_recovery=True)
    try:
        yield service
    finally:
        await service.close()


async def recover_until_clean(service: WalletService) -> None:
    """The recovery worker's loop, bounded: a pass that met a shard mid-failover is repeated."""
    for _ in range(RECOVERY_ATTEMPTS):
        report = await service.recover(abort_after_ms=0)
        if not report.errors and report.waiting == 0:
            return
        await asyncio.sleep(0.5)
    raise AssertionError(f"recovery never finished cleanly: {report}")


async def leftovers(topology: Topology, service: WalletService, accounts: list[str]) -> dict[str, int]:
    """Prepared transactions, holds and unfinished TC/C or Saga transfers left on the shards."""
    return {
        "prepared": await prepared_count(topology),
        "reserved": await reserved_of(service, accounts),
        "unfinished": await unfinished_phases(topology),
    }


# Retry with the same transaction id until the answer is not `shard_unavailable`; a failover
# and its recovery may take a minute.
DEFINITE_ATTEMPTS = 120


async def definite(service: WalletService, transfer: dict[str, str]) -> str:
    return await retry_until_known(service, transfer, DEFINITE_ATTEMPTS)


def kill_primary(ha: HaCluster, name: str) -> tuple[str, str]:
    """SIGKILL the cluster's primary postmaster; (old, new) primary once the standby took over."""
    old = ha.wait_healthy(name)
    ha.kill_postmaster(old)
    new = ha.wait_new_leader(name, old)
    return old.name, new.name


def test_every_cluster_has_a_primary_and_a_synchronous_standby(ha: HaCluster) -> None:
    """Each shard and the ledger: a running leader, a streaming synchronous standby, the same
    max_prepared_transactions on both, a topology DSN naming both members read-write."""
    topology = ha.topology
    assert sorted(topology.shards) == list(SHARDS) and topology.ledgers
    for name in ha.names:
        assert ha.wait_healthy(name) is not None and ha.sync_standby(name) is not None
        dsn = topology.ledgers[name].dsn if is_ledger(name) else topology.shards[name]
        assert dsn is not None and "target_session_attrs=read-write" in dsn
        assert len(replication.members_of(dsn)) == 2
        settings = asyncio.run(replication.member_settings(dsn))
        assert len({s.max_prepared_transactions for s in settings}) == 1 and settings[0].max_prepared_transactions


def test_cli_and_readiness_on_ha_shards(ha: HaCluster, ha_settings: Settings) -> None:
    """`wallet db current` and `wallet topology show` work unchanged; /readyz names every
    shard ok; with a standby stopped it says the shard is degraded but stays ready."""
    environment = {**os.environ, "WALLET_HOME": str(ha.home)}

    def wallet(*arguments: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "coordinator.cli.main", *arguments],
            cwd=REPOSITORY,
            env=environment,
            capture_output=True,
            text=True,
            timeout=120,
        )

    current = wallet("db", "current")
    assert current.returncode == 0, current.stderr
    assert all(name in current.stdout for name in SHARDS)
    shown = wallet("topology", "show")
    assert shown.returncode == 0 and "target_session_attrs=read-write" in shown.stdout

    async def readyz() -> tuple[httpx.Response, str]:
        """/readyz, and what /metrics says of replication right after it."""
        async with WalletService(ha.topology, ha_settings) as service:
            app = build_app(ha_settings, service=service)
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://wallet.test", headers=bearer()
            ) as http:
                ready = await http.get("/readyz")
            metrics = Metrics()
            await metrics.refresh(service)
            return ready, metrics.render().decode()

    ready, scraped = asyncio.run(readyz())
    assert ready.status_code == 200, ready.text
    assert all(ready.json()["checks"][name] == "ok" for name in SHARDS)
    # what the alerts read: every shard and ledger server a pair whose primary has its standby
    for shard in SHARDS:
        assert sample(scraped, "wallet_shard_servers", shard=shard) == 2
        assert sample(scraped, "wallet_shard_synchronous_standbys", shard=shard) == 1
    for ledger in ha.topology.ledgers:
        assert sample(scraped, "wallet_ledger_up", ledger=ledger) == 1
        assert sample(scraped, "wallet_ledger_servers", ledger=ledger) == 2
        assert sample(scraped, "wallet_ledger_synchronous_standbys", ledger=ledger) == 1

    standby = ha.sync_standby("shard1")
    assert standby is not None
    ha.stop_member(standby)
    try:
        deadline = time.monotonic() + 30
        while True:  # the primary notices its standby is gone within a few seconds
            degraded, scraped = asyncio.run(readyz())
            if degraded.json().get("checks", {}).get("shard1", "ok") != "ok" or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert degraded.status_code == 200
        assert "no synchronous standby" in degraded.json()["checks"]["shard1"]
        assert (
            sample(scraped, "wallet_shard_synchronous_standbys", shard="shard1") == 0
        )  # WalletShardNoSynchronousStandby
        assert sample(scraped, "wallet_shard_up", shard="shard1") == 1
    finally:
        ha.start_member(standby)
        ha.wait_healthy("shard1")


@pytest.mark.parametrize(("fault_point", "decided"), [("2pc.after_all_prepares", False), ("2pc.after_decision", True)])
async def test_prepared_branches_survive_the_primary(
    ha: HaCluster, ha_service: WalletService, tmp_path: Path, fault_point: str, decided: bool
) -> None:
    """The coordinator dies with branches prepared (and, after the decision, a commit decision
    recorded); then the primary of shard0 dies too. The promoted standby has the prepared
    transactions and the decision; recovery finishes each branch by it."""
    topology = ha.topology
    everyone = [a for shard in SHARDS for a in accounts_on(topology, shard, 3)]
    await open_accounts(ha_service, everyone, deposit="100.00")
    transfers = cross_shard_transfers(topology, everyone, 20, fault_point)
    kill_at(ha.topology_path, transfers, fault_point, "2pc", tmp_path)
    before = await prepared_count(topology)
    assert before > 0

    old, new = await asyncio.to_thread(kill_primary, ha, "shard0")
    assert old != new
    assert await prepared_count(topology) == before, "the promoted standby lost prepared transactions"

    await recover_until_clean(ha_service)
    assert await prepared_count(topology) == 0
    found = 0
    for transfer in transfers:
        try:
            await ha_service.get_transfer(transfer["id"])
            found += 1
        except WalletError as error:
            assert error.code in ("transfer_not_found", "shard_unavailable")
    assert (found == len(transfers)) == decided and (found == 0) == (not decided)
    statuses = await asyncio.gather(*(definite(ha_service, t) for t in transfers))
    assert set(statuses) == {"success"}
    expected = expected_after_all_once({a: 10_000 for a in everyone}, transfers)
    assert {a: (await ha_service.get_account(a)).balance for a in everyone} == expected
    await assert_outbox_explains(topology, everyone)
    await asyncio.to_thread(ha.wait_healthy, "shard0")  # the old primary back, as the standby


async def test_mixed_load_across_a_primary_kill(ha: HaCluster, ha_serving: WalletService) -> None:
    """2pc, tcc, saga and one-shard transfers while shard1's primary is SIGKILLed: every
    acknowledged transfer is in the balances once, money is conserved, nothing is left
    prepared, held or unfinished, and every retry agrees with the first definite answer."""
    topology = ha.topology
    rng = random.Random(16)
    everyone = [a for shard in SHARDS for a in accounts_on(topology, shard, 6)]
    await open_accounts(ha_serving, everyone, deposit="100.00")
    transfers = []
    for index in range(360):
        source, target = rng.sample(everyone, 2)
        transfers.append(
            {
                "from": source,
                "to": target,
                "amount": f"{rng.randint(1, 900) / 100:.2f}",
                "id": str(uuid.uuid4()),
                "mode": ("2pc", "tcc", "saga")[index % 3],
            }
        )
    first: dict[str, str] = {}

    async def send(transfer: dict[str, str]) -> None:
        await asyncio.sleep(rng.random() * 4.0)
        first[transfer["id"]] = await definite(ha_serving, transfer)

    async def crash() -> tuple[str, str]:
        await asyncio.sleep(1.5)
        return await asyncio.to_thread(kill_primary, ha, "shard1")

    started = time.monotonic()
    crashed = asyncio.create_task(crash())
    await asyncio.gather(*(send(t) for t in transfers))
    old, new = await crashed
    assert old != new and time.monotonic() - started < 120
    await recover_until_clean(ha_serving)
    assert set(first.values()) <= {"success", "failed", "insufficient_funds"}, set(first.values())
    again = await asyncio.gather(*(definite(ha_serving, t) for t in transfers))
    retried = dict(zip((t["id"] for t in transfers), again, strict=True))
    assert retried == first, "a retry disagreed with the first answer"
    applied = [t for t in transfers if first[t["id"]] == "success"]
    assert applied, "nothing was applied"
    expected = expected_after_all_once({a: 10_000 for a in everyone}, applied)
    assert {a: (await ha_serving.get_account(a)).balance for a in everyone} == expected
    assert await leftovers(topology, ha_serving, everyone) == {"prepared": 0, "reserved": 0, "unfinished": 0}
    await assert_outbox_explains(topology, everyone)
    await asyncio.to_thread(ha.wait_healthy, "shard1")


async def head_position(topology: Topology, stream: str) -> int:
    connection = await asyncpg.connect(topology.ledgers[topology.ledger_of(stream)].dsn)
    try:
        return int(
            await connection.fetchval("SELECT coalesce(max(position), 0) FROM ledger_heads WHERE stream = $1", stream)
        )
    finally:
        await connection.close()


async def test_ledger_primary_kill(ha: HaCluster, ha_settings: Settings) -> None:
    """The relay across a failover of one ledger server (of two): the other server's stream
    keeps relaying while it has no primary; it resumes on the promoted standby, the chain
    verifies, no event is duplicated or missing, replay equals live."""
    topology = ha.topology
    assert topology.ledger_of("shard0") == LEDGER and topology.ledger_of("shard1") != LEDGER
    await asyncio.to_thread(ha.wait_healthy, LEDGER)
    service = await WalletService(topology, ha_settings).open(run_relay=True)
    try:
        everyone = [a for shard in SHARDS for a in accounts_on(topology, shard, 4)]
        await open_accounts(service, everyone, deposit="50.00")
        transfers = cross_shard_transfers(topology, everyone, 60, "ledger-failover")

        async def send(transfer: dict[str, str]) -> str:
            await asyncio.sleep(random.random() * 3.0)
            return await definite(service, transfer)

        async def crash() -> tuple[str, str, bool]:
            """Kill the ledger's primary; whether shard1's stream (on the other ledger server)
            advanced before a new primary took over."""
            await asyncio.sleep(1.0)
            other_before = await head_position(topology, "shard1")
            failover = asyncio.create_task(asyncio.to_thread(kill_primary, ha, LEDGER))
            other_moved = False
            while not failover.done():
                other_moved = other_moved or await head_position(topology, "shard1") > other_before
                await asyncio.sleep(0.2)
            old, new = await failover
            return old, new, other_moved

        crashed = asyncio.create_task(crash())
        statuses = await asyncio.gather(*(send(t) for t in transfers))
        old, new, other_moved = await crashed
        assert old != new and set(statuses) == {"success"}
        assert other_moved, "the other ledger server's stream relays while this one has no primary"
        ledger_service = service.ledger
        assert ledger_service is not None
        deadline = time.monotonic() + 60
        while True:  # the relay's own loop reaches the new primary; drain until the outbox is empty
            try:
                await ledger_service.drain()
                report = await ledger_service.audit()
                if report.clean and not report.lagging:
                    break
            except WalletError:
                pass
            assert time.monotonic() < deadline, "the relay did not resume on the new ledger primary"
            await asyncio.sleep(0.5)
        assert not await ledger_service.verify()
        versions: dict[str, list[int]] = {}
        for server in topology.ledgers.values():
            ledger = await asyncpg.connect(server.dsn)
            try:
                duplicated = await ledger.fetchval(
                    "SELECT count(*) - count(DISTINCT (stream, source_event_id)) FROM ledger_events"
                )
                assert duplicated == 0
                for row in await ledger.fetch(
                    "SELECT account_id, version FROM ledger_events WHERE account_id = ANY($1::text[])", everyone
                ):
                    versions.setdefault(row["account_id"], []).append(row["version"])
            finally:
                await ledger.close()
        for account_id in everyone:  # every change of every account, once, in order
            live = (await service.get_account(account_id)).version
            assert sorted(versions[account_id]) == list(range(1, live + 1)), account_id
    finally:
        await service.close()
    await asyncio.to_thread(ha.wait_healthy, LEDGER)


async def test_demoted_primary_refuses_writes(ha: HaCluster, ha_service: WalletService) -> None:
    """A switchover demotes the primary: a connection held to it cannot commit, the old primary
    rejoins as a standby that refuses writes, and the service reaches the new primary without
    a restart."""
    topology = ha.topology
    old = await asyncio.to_thread(ha.wait_healthy, "shard0")
    alice, bob = accounts_on(topology, "shard0", 2)
    await open_accounts(ha_service, [alice, bob], deposit="10.00")
    held = await asyncpg.connect(old.dsn("wallet"))
    transaction = held.transaction()
    await transaction.start()
    await held.execute("UPDATE accounts SET balance = balance + 1000 WHERE account_id = $1", alice)

    candidate = next(m for m in ha.clusters["shard0"] if m.name != old.name)
    body = json.dumps({"leader": old.name, "candidate": candidate.name}).encode()
    request = urllib.request.Request(
        f"{old.api}/switchover", data=body, method="POST", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as answer:
        assert answer.status == 200
    with pytest.raises((asyncpg.PostgresError, asyncpg.InterfaceError, OSError)):
        await transaction.commit()
    held.terminate()

    new = await asyncio.to_thread(ha.wait_new_leader, "shard0", old)
    assert new.name == candidate.name
    await asyncio.to_thread(ha.wait_healthy, "shard0")  # the old primary streams again
    demoted = await asyncpg.connect(old.dsn("wallet"))
    try:
        assert await demoted.fetchval("SELECT pg_is_in_recovery()")
        with pytest.raises(asyncpg.ReadOnlySQLTransactionError):
            await demoted.execute("UPDATE accounts SET balance = balance + 1000 WHERE account_id = $1", alice)
    finally:
        await demoted.close()
    assert (await ha_service.get_account(alice)).balance == 1000  # the held update never landed

    started = time.monotonic()
    status = await definite(ha_service, {"from": alice, "to": bob, "amount": "1.00", "id": str(uuid.uuid4())})
    assert status == "success" and time.monotonic() - started < 30


async def test_failover_window_is_measured(ha: HaCluster, ha_settings: Settings) -> None:
    """`wallet bench failover` in small: one failover under load (the recovery worker running,
    as in `wallet serve`), its window measured, nothing acknowledged lost."""
    await asyncio.to_thread(ha.wait_healthy, "shard0")
    service = await WalletService(ha.topology, ha_settings).open(run_recovery=True)
    try:
        report = await failover.measure(ha, service, "shard0", failovers=1, workers=8, between_s=1.0)
    finally:
        await service.close()
    assert report.lost == 0 and report.conserved and report.acknowledged > 0
    assert len(report.failovers) == 1 and report.failovers[0].window_s < 60
    assert "failovers a year" in report.table()
