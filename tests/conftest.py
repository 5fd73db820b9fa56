"""Fixtures that start real PostgreSQL shards (and a ZooKeeper) on loopback, migrate them, and
stop them. A test that uses one, directly or through another fixture, is marked `cluster`;
`make test-fast` (pytest -m "not cluster") runs the rest, which need no server, in seconds.
Shared helpers live in tests/helpers.py."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from coordinator.service.wallet import WalletService
from core.runtime.settings import Settings
from launchers.postgres import LocalCluster
from launchers.postgres import temporary_home as make_home
from shard_router.topology import Topology
from shards import migrate
from tests.helpers import TEST_SECRET

# Fixtures that start servers (here and in test modules); a test that starts its own says so
# with @pytest.mark.cluster.
SERVER_FIXTURES = frozenset({"cluster", "zookeeper", "spare_cluster", "own_zookeeper", "three_shards", "ha"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if SERVER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.cluster)


@pytest.fixture(scope="session")
def cluster() -> Iterator[LocalCluster]:
    home = make_home("shards")
    local = LocalCluster(home, shard_count=4)
    try:
        topology = local.start()
        assert topology.ledgers
        migrate.upgrade_all(topology)
        yield local
    finally:
        local.stop()
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def topology(cluster: LocalCluster) -> Topology:
    return cluster.topology


@pytest.fixture
def settings(cluster: LocalCluster) -> Settings:
    return Settings(home=cluster.home, topology_path=cluster.topology_path, auth_secret=TEST_SECRET)


@pytest.fixture
async def service(topology: Topology, settings: Settings) -> AsyncIterator[WalletService]:
    async with WalletService(topology, settings) as opened:
        yield opened


@pytest.fixture(scope="session")
def zookeeper() -> Iterator[str]:
    """A real standalone ZooKeeper server for the session: its hosts string."""
    from launchers.zookeeper import LocalZooKeeper

    server = LocalZooKeeper(make_home("zookeeper"))
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture
def zk_root() -> str:
    """A fresh root znode per test, so tests sharing the server do not see each other."""
    return f"/wallet-test-{uuid.uuid4().hex[:12]}"
