"""Online slot migration and the fence, on a cluster of our own (three shards, the third
added empty, as a DBA adds one) with the topology in a real ZooKeeper."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest

from coordinator.cluster import slot_migration
from coordinator.cluster.topology_follower import TopologyFollower
from coordinator.protocols import branch_steps as branches
from coordinator.service.wallet import WalletService
from core.domain.errors import WalletError
from core.domain.transfers import Transfer
from core.runtime.settings import Settings
from launchers.postgres import LocalCluster
from shard_router.slots import SLOT_COUNT, slot_of
from shard_router.stores import connect_zookeeper
from shard_router.topology import LedgerServer, Topology
from shard_router.zookeeper_store import ZooKeeperTopologyStore
from shards import migrate
from tests.helpers import assert_outbox_explains, make_home, settled_value

DEPOSIT_CENTS = 100_000
SWITCH_WAIT_S = 10


@pytest.fixture(scope="module")
def three_shards() -> Iterator[tuple[LocalCluster, Topology]]:
    """shard0 and shard1 own every slot; shard2 is new and owns none."""
    cluster = LocalCluster(make_home("moving"), shard_count=3)
    try:
        started = cluster.start()
        two = {name: started.shards[name] for name in ("shard0", "shard1")}
        slots = Topology.even(two).slots
        topology = Topology(1, started.shards, slots, {}, started.ledgers)
        migrate.upgrade_all(topology)
        yield cluster, topology
    finally:
        cluster.stop()


@pytest.fixture
async def store(
    three_shards: tuple[LocalCluster, Topology], zookeeper: str, zk_root: str
) -> AsyncIterator[ZooKeeperTopologyStore]:
    _, topology = three_shards
    opened = ZooKeeperTopologyStore(connect_zookeeper(zookeeper, 4000), zk_root, owns_client=True)
    # Each test starts from what the shards say now (earlier tests moved slots).
    owners = await asyncio.gather(*(owned(topology, shard) for shard in sorted(topology.shards)))
    slots = [""] * SLOT_COUNT
    for shard, slot_list in zip(sorted(topology.shards), owners, strict=True):
        for slot in slot_list:
            slots[slot] = shard
    assert all(slots), "every slot is owned by exactly one shard between tests"
    opened.save(Topology(1, topology.shards, tuple(slots), {}, topology.ledgers))
    try:
        yield opened
    finally:
        opened.close()


async def owned(topology: Topology, shard: str) -> list[int]:
    connection = await asyncpg.connect(topology.shards[shard])
    try:
        return [row["slot"] for row in await connection.fetch("SELECT slot FROM shard_slots ORDER BY slot")]
    finally:
        await connection.close()


@pytest.fixture
async def service(
    three_shards: tuple[LocalCluster, Topology], store: ZooKeeperTopologyStore
) -> AsyncIterator[WalletService]:
    cluster, _ = three_shards
    settings = Settings(home=cluster.home, topology_path=cluster.topology_path)
    opened = await WalletService(store.load(), settings, store).open()
    follower = TopologyFollower(store, opened.switch_topology)
    follower.start()
    try:
        yield opened
    finally:
        await follower.stop()
        await opened.close()


def ids_in_slot(slot: int, count: int) -> list[str]:
    prefix = uuid.uuid4().hex[:8]
    found = [f"{prefix}-{i}" for i in range(2_000_000) if slot_of(f"{prefix}-{i}") == slot]
    assert len(found) >= count
    return found[:count]


def ids_on(topology: Topology, shard: str, count: int, avoid_slot: int) -> list[str]:
    prefix = uuid.uuid4().hex[:8]
    found = [
        f"{prefix}-{i}"
        for i in range(100_000)
        if topology.shard_of(f"{prefix}-{i}") == shard and slot_of(f"{prefix}-{i}") != avoid_slot
    ]
    return found[:count]


async def open_funded(service: WalletService, ids: list[str]) -> None:
    for account_id in ids:
        await service.create_account(account_id, "owner", "USD")
        await service.deposit(account_id, f"{DEPOSIT_CENTS // 100}.00", str(uuid.uuid4()))


async def rows_everywhere(topology: Topology, account_id: str) -> dict[str, str]:
    """shard -> placement of every row the account has."""
    found = {}
    for shard, dsn in sorted(topology.shards.items()):
        connection = await asyncpg.connect(dsn)
        try:
            placement = await connection.fetchval("SELECT placement FROM accounts WHERE account_id = $1", account_id)
        finally:
            await connection.close()
        if placement is not None:
            found[shard] = placement
    return found


async def wait_for_version(service: WalletService, version: int) -> None:
    for _ in range(SWITCH_WAIT_S * 10):
        if service.topology.version >= version:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"the service still routes with version {service.topology.version}, not {version}")


async def test_sql_slot_function_matches_the_router(three_shards: tuple[LocalCluster, Topology]) -> None:
    """Protects the fence: the database computes each account's slot exactly as the router does."""
    _, topology = three_shards
    rng = random.Random(7)
    ids = (
        [uuid.uuid4().hex for _ in range(300)]
        + ["a", "Zoë-ünïcode-账户", "x" * 64]
        + ["".join(rng.choice("abc-_:.0123456789") for _ in range(rng.randint(1, 40))) for _ in range(200)]
    )
    connection = await asyncpg.connect(topology.shards["shard0"])
    try:
        rows = await connection.fetch("SELECT id, wallet_slot(id) AS slot FROM unnest($1::text[]) AS id", ids)
    finally:
        await connection.close()
    assert {row["id"]: row["slot"] for row in rows} == {i: slot_of(i) for i in ids}


async def test_slot_moves_while_transfers_run(service: WalletService, store: ZooKeeperTopologyStore) -> None:
    """Protects resharding without downtime: a slot moves to the new shard under concurrent
    transfers in every mode; money is conserved, each success applied once, the watch switches
    the coordinator, and every account is live on exactly one shard."""
    topology = service.topology
    slot = random.Random(1).choice(topology.slots_of("shard0"))
    moving = ids_in_slot(slot, 8)
    others = ids_on(topology, "shard0", 6, slot) + ids_on(topology, "shard1", 6, slot)
    everyone = moving + others
    await open_funded(service, everyone)
    expected = {account_id: DEPOSIT_CENTS for account_id in everyone}
    rng = random.Random(2)
    outcomes: dict[str, int] = {}

    async def client(number: int) -> None:
        for _ in range(25):
            source, target = rng.sample(everyone, 2)
            cents = rng.randint(1, 500)
            mode = rng.choice(["2pc", "tcc", "saga"])
            try:
                result = await service.transfer(
                    source, target, f"{cents // 100}.{cents % 100:02d}", "USD", str(uuid.uuid4()), mode
                )
                status = result.status if result.status == "success" else f"{result.status}:{result.error_code}:{mode}"
            except WalletError as error:
                status = error.code
            outcomes[status] = outcomes.get(status, 0) + 1
            if status == "success":
                expected[source] -= cents
                expected[target] += cents
            await asyncio.sleep(rng.random() / 50)

    async def mover() -> slot_migration.MoveReport:
        await asyncio.sleep(0.3)
        return await slot_migration.move_slot(store, service.pools, slot, "shard2")

    *_, report = await asyncio.gather(*(client(n) for n in range(6)), mover())
    assert isinstance(report, slot_migration.MoveReport)
    assert report.moved == len(moving) and report.source == "shard0"
    assert outcomes.get("success", 0) > 100, outcomes
    assert set(outcomes) == {"success"}, outcomes
    await wait_for_version(service, report.version)
    assert service.topology.shard_of(moving[0]) == "shard2"

    await service.recover(abort_after_ms=0)
    for account_id in everyone:
        account = await service.get_account(account_id)
        assert (account.balance, account.reserved) == (expected[account_id], 0), account_id
    for account_id in moving:
        assert await rows_everywhere(service.topology, account_id) == {"shard0": "moved", "shard2": "live"}
    for account_id in others:
        assert list((await rows_everywhere(service.topology, account_id)).values()) == ["live"]
    assert await owned(service.topology, "shard2") == [slot]
    await assert_outbox_explains(service.topology, everyone)


async def test_stale_coordinator_is_fenced(
    service: WalletService, store: ZooKeeperTopologyStore, three_shards: tuple[LocalCluster, Topology]
) -> None:
    """Protects 'never live on two shards': a coordinator routing with the old topology is
    refused by the old shard (nothing written there) and, given the store, routes again."""
    cluster, _ = three_shards
    old = service.topology
    slot = random.Random(3).choice(old.slots_of("shard1"))
    moving = ids_in_slot(slot, 2)
    await open_funded(service, moving)
    report = await slot_migration.move_slot(store, service.pools, slot, "shard2")
    assert report.moved == 2

    settings = Settings(home=cluster.home, topology_path=cluster.topology_path)
    async with WalletService(old, settings) as stale:  # no store: it cannot learn the new topology
        with pytest.raises(WalletError) as refused:
            await stale.transfer(moving[0], moving[1], "1.00", "USD", str(uuid.uuid4()), "2pc")
        assert refused.value.code == "shard_unavailable"
        with pytest.raises(WalletError):
            await stale.create_account(ids_in_slot(slot, 1)[0], "owner", "USD")
    async with WalletService(old, settings, store) as learning:  # with the store: refused, then rerouted
        result = await learning.transfer(moving[0], moving[1], "1.00", "USD", str(uuid.uuid4()), "2pc")
        assert result.status == "success"
        assert learning.topology.version == report.version
    new_shard = await asyncpg.connect(old.shards["shard2"])
    old_shard = await asyncpg.connect(old.shards["shard1"])
    try:
        balances_new = {
            r["account_id"]: r["balance"]
            for r in await new_shard.fetch(
                "SELECT account_id, balance FROM accounts WHERE account_id = ANY($1)", moving
            )
        }
        balances_old = {
            r["account_id"]: r["balance"]
            for r in await old_shard.fetch(
                "SELECT account_id, balance FROM accounts WHERE account_id = ANY($1)", moving
            )
        }
    finally:
        await new_shard.close()
        await old_shard.close()
    assert balances_new == {moving[0]: DEPOSIT_CENTS - 100, moving[1]: DEPOSIT_CENTS + 100}
    assert balances_old == {moving[0]: DEPOSIT_CENTS, moving[1]: DEPOSIT_CENTS}, "the old shard took no write"


async def test_interrupted_move_is_finished_by_running_it_again(
    service: WalletService, store: ZooKeeperTopologyStore
) -> None:
    """Protects against a mover killed between the flip and the landing: the slot is served by
    nobody (never by two), and the same command resumes and lands it with exact balances."""
    topology = service.topology
    slot = random.Random(4).choice(topology.slots_of("shard0"))
    moving = ids_in_slot(slot, 3)
    await open_funded(service, moving)
    pinned: list[str] = []
    await slot_migration.copy_live(service.pools, "shard0", "shard2", slot, pinned)
    report = slot_migration.MoveReport(slot, "shard0", "shard2")
    await slot_migration.flip(service.pools, topology, "shard0", slot, pinned, report)  # ... and the mover dies
    assert await rows_everywhere(topology, moving[0]) == {"shard0": "moved", "shard2": "incoming"}
    assert slot not in await owned(topology, "shard0") and slot not in await owned(topology, "shard2")

    resumed = await slot_migration.move_slot(store, service.pools, slot, "shard2")
    assert resumed.resumed == "flipped" and resumed.moved == 3
    again = await slot_migration.move_slot(store, service.pools, slot, "shard2")
    assert again.version == resumed.version and again.moved == 0
    await wait_for_version(service, resumed.version)
    for account_id in moving:
        assert (await service.get_account(account_id)).balance == DEPOSIT_CENTS


async def test_flip_waits_for_an_open_hold(
    service: WalletService, store: ZooKeeperTopologyStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Protects holds and phase state: a slot with an unfinished TC/C transfer does not move
    (nothing changes), and moves once recovery has finished the transfer."""
    topology = service.topology
    slot = random.Random(5).choice(topology.slots_of("shard1"))
    source = ids_in_slot(slot, 1)[0]
    target = ids_on(topology, "shard0", 1, slot)[0]
    await open_funded(service, [source, target])
    transfer = Transfer(str(uuid.uuid4()), "transfer", source, target, 500, "USD", "tcc")
    [start] = await branches.try_debits(service.shards, "shard1", [transfer], settled_value({}))
    assert start.kind == "held"
    monkeypatch.setattr(slot_migration, "FLIP_ATTEMPTS_MAX", 2)
    with pytest.raises(slot_migration.MigrationError, match="busy"):
        await slot_migration.move_slot(store, service.pools, slot, "shard0")
    assert slot in await owned(topology, "shard1")
    assert (await service.get_account(source)).reserved == 500

    await service.recover(abort_after_ms=0)  # recovery drives the abandoned transfer to its end
    report = await slot_migration.move_slot(store, service.pools, slot, "shard0")
    assert report.moved == 1
    await wait_for_version(service, report.version)
    account, other = await service.get_account(source), await service.get_account(target)
    assert account.reserved == 0 and account.balance in (DEPOSIT_CENTS, DEPOSIT_CENTS - 500)
    assert account.balance + other.balance == 2 * DEPOSIT_CENTS


async def test_watch_switches_the_coordinator_without_a_request(
    service: WalletService, store: ZooKeeperTopologyStore
) -> None:
    """Protects 'switch without restart': a version written to ZooKeeper reaches a running
    coordinator by its watch alone, and it routes by it."""
    current = service.topology
    newcomer = f"pinned-{uuid.uuid4().hex[:8]}"
    elsewhere = "shard2" if current.shard_of(newcomer) != "shard2" else "shard0"
    store.save(Topology(current.version + 1, current.shards, current.slots, {newcomer: elsewhere}, current.ledgers))
    await wait_for_version(service, current.version + 1)
    account, created = await service.create_account(newcomer, "owner", "USD")
    assert created and service.topology.shard_of(newcomer) == elsewhere
    assert await rows_everywhere(service.topology, newcomer) == {elsewhere: "live"}


async def test_a_shard_added_at_runtime_has_its_batches_observed(three_shards: tuple[LocalCluster, Topology]) -> None:
    """Protects batch metrics on appliers that a topology switch starts: observers are handed
    to every applier, not wrapped around those that existed when they were added."""
    from coordinator.api.metrics import Metrics

    cluster, topology = three_shards
    owner = {slot: shard for shard in ("shard0", "shard1", "shard2") for slot in await owned(topology, shard)}
    # Version 1 knows two shards (the slots shard2 owns map to shard1: nothing here touches
    # their accounts); version 2 adds shard2 and pins this test's accounts to it.
    before = tuple("shard0" if owner[slot] == "shard0" else "shard1" for slot in range(SLOT_COUNT))
    slots = tuple(owner[slot] for slot in range(SLOT_COUNT))
    two = {name: topology.shards[name] for name in ("shard0", "shard1")}
    metrics = Metrics()
    settings = Settings(home=cluster.home, topology_path=cluster.topology_path)
    ledgers = {
        name: LedgerServer(server.dsn, tuple(s for s in server.streams if s in two))
        for name, server in topology.ledgers.items()
    }
    async with WalletService(Topology(1, two, before, {}, ledgers), settings) as service:
        service.observe_batches(metrics.observe_batch)
        pinned = [f"added-{uuid.uuid4().hex[:8]}-{index}" for index in range(2)]
        grown = Topology(2, topology.shards, slots, {account: "shard2" for account in pinned}, topology.ledgers)
        assert await service.switch_topology(grown)
        await open_funded(service, pinned)
        result = await service.transfer(pinned[0], pinned[1], "1.00", "USD", str(uuid.uuid4()))
        assert result.status == "success" and result.protocol == "local"
    rendered = metrics.render().decode()
    assert 'wallet_batch_size_count{applier="shard2"}' in rendered, "the new shard's applier is observed"
    count = next(line for line in rendered.splitlines() if line.startswith('wallet_batch_size_count{applier="shard2"}'))
    assert float(count.split()[-1]) >= 3, "two deposits and a transfer, in at least three batches"
