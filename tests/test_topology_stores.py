"""The one contract every topology store keeps (file and ZooKeeper), run against both:
round trip, newer-only saves, concurrent writers refused, watches that deliver each version."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from shard_router.file_store import FileTopologyStore
from shard_router.stores import TopologyStore, connect_zookeeper
from shard_router.topology import Topology, TopologyError
from shard_router.zookeeper_store import ZooKeeperTopologyStore

SHARDS = {
    "shard_a": "postgresql://wallet@127.0.0.1:5501/wallet",
    "shard_b": "postgresql://wallet@127.0.0.1:5502/wallet",
}
WATCH_WAIT_S = 10


def topology_at(version: int, overrides: dict[str, str] | None = None) -> Topology:
    return Topology(version, SHARDS, Topology.even(SHARDS).slots, overrides or {})


@pytest.fixture(params=["file", pytest.param("zookeeper", marks=pytest.mark.cluster)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TopologyStore]:
    if request.param == "file":
        yield FileTopologyStore(tmp_path / "topology.json")
        return
    hosts = request.getfixturevalue("zookeeper")
    root = request.getfixturevalue("zk_root")
    zk_store = ZooKeeperTopologyStore(connect_zookeeper(hosts, 4000), root, owns_client=True)
    try:
        yield zk_store
    finally:
        zk_store.close()


def test_empty_store_says_how_to_start(store: TopologyStore) -> None:
    """Protects first start: an empty store is reported, not crashed on."""
    assert not store.exists()
    with pytest.raises(TopologyError):
        store.load()


def test_save_load_round_trip(store: TopologyStore) -> None:
    """Protects persistence: what is saved, overrides included, is what is loaded."""
    topology = topology_at(3, {"vip": "shard_b"})
    store.save(topology)
    assert store.exists()
    assert store.load() == topology
    assert store.load().shard_of("vip") == "shard_b"


def test_newer_versions_only(store: TopologyStore) -> None:
    """Protects against a stale writer undoing a newer topology; saving the same one is a no-op."""
    store.save(topology_at(5))
    store.save(topology_at(5))
    with pytest.raises(TopologyError, match="not newer"):
        store.save(topology_at(4))
    with pytest.raises(TopologyError, match="not newer"):
        store.save(topology_at(5, {"x": "shard_a"}))
    store.save(topology_at(6))
    assert store.load().version == 6


def test_watch_delivers_current_and_each_new_version(store: TopologyStore) -> None:
    """Protects the switch without restart: a watcher sees the stored version, then every newer one."""
    store.save(topology_at(1))
    seen: list[int] = []
    arrived = threading.Condition()

    def on_topology(topology: Topology) -> None:
        with arrived:
            seen.append(topology.version)
            arrived.notify_all()

    stop = store.watch(on_topology)
    try:
        with arrived:
            assert arrived.wait_for(lambda: 1 in seen, WATCH_WAIT_S)
        store.save(topology_at(2))
        with arrived:
            assert arrived.wait_for(lambda: 2 in seen, WATCH_WAIT_S)
    finally:
        stop()
    assert seen == sorted(seen), "versions arrive in order"


def test_zookeeper_refuses_a_writer_that_read_an_old_version(zookeeper: str, zk_root: str) -> None:
    """Protects concurrent operators: two writers that read version 1 cannot both write version 2."""
    first = ZooKeeperTopologyStore(connect_zookeeper(zookeeper, 4000), zk_root, owns_client=True)
    try:
        first.save(topology_at(1))
        _, stat = first.client.get(first.path)
        first.save(topology_at(2))
        # A writer that still holds the old znode version is refused by compare-and-set.
        from kazoo.exceptions import BadVersionError

        with pytest.raises(BadVersionError):
            first.client.set(first.path, b"{}", version=stat.version)
        with pytest.raises(TopologyError, match="not newer"):
            first.save(topology_at(2, {"late": "shard_a"}))
        assert first.load() == topology_at(2)
    finally:
        first.close()


def test_zookeeper_refuses_a_bad_document(zookeeper: str, zk_root: str) -> None:
    """Protects routing: a hand-edited znode that is not a topology is refused on load."""
    store = ZooKeeperTopologyStore(connect_zookeeper(zookeeper, 4000), zk_root, owns_client=True)
    try:
        store.client.create(store.path, b"not json", makepath=True)
        with pytest.raises(TopologyError, match="not JSON"):
            store.load()
    finally:
        store.close()


def test_unreachable_zookeeper_is_a_clear_error() -> None:
    """Protects operators from a hang: no server at the address fails within the connect timeout."""
    import shard_router.stores as stores

    original = stores.CONNECT_TIMEOUT_S
    stores.CONNECT_TIMEOUT_S = 2
    try:
        with pytest.raises(TopologyError, match="cannot reach ZooKeeper"):
            connect_zookeeper("127.0.0.1:1", 4000)
    finally:
        stores.CONNECT_TIMEOUT_S = original
