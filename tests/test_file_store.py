"""Pure tests of the JSON-file topology store, in pytest's tmp_path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shard_router.file_store import FileTopologyStore
from shard_router.topology import Topology, TopologyError

SHARDS = {
    "shard_a": "postgresql://wallet@127.0.0.1:5501/wallet",
    "shard_b": "postgresql://wallet@127.0.0.1:5502/wallet",
}


def make_topology(version: int = 1, overrides: dict[str, str] | None = None) -> Topology:
    base = Topology.even(SHARDS)
    return Topology(version, SHARDS, base.slots, overrides or {})


def test_save_then_load_round_trips(tmp_path: Path) -> None:
    """Protects persistence: what is saved is what is loaded."""
    store = FileTopologyStore(tmp_path / "topology.json")
    assert not store.exists()
    topology = make_topology(version=2, overrides={"bob": "shard_b"})
    store.save(topology)
    assert store.exists()
    loaded = store.load()
    assert loaded == topology
    assert loaded.shard_of("bob") == "shard_b"


def test_saved_file_is_the_readable_document(tmp_path: Path) -> None:
    """Protects the on-disk format: indented JSON of to_document, newline-terminated."""
    path = tmp_path / "topology.json"
    topology = make_topology()
    FileTopologyStore(path).save(topology)
    text = path.read_text()
    assert text.endswith("}\n")
    assert json.loads(text) == topology.to_document()
    assert "\n  " in text  # indented, so diffs stay readable


def test_save_creates_missing_parent_directories(tmp_path: Path) -> None:
    """Protects first start: the store makes its own directory."""
    store = FileTopologyStore(tmp_path / "deep" / "er" / "topology.json")
    store.save(make_topology())
    assert store.load() == make_topology()


def test_store_accepts_a_string_path(tmp_path: Path) -> None:
    """Protects callers that pass the path as text (e.g. from an environment variable)."""
    store = FileTopologyStore(str(tmp_path / "topology.json"))  # type: ignore[arg-type]  # the wrong type, on purpose
    store.save(make_topology())
    assert isinstance(store.path, Path)
    assert store.load().version == 1


def test_save_accepts_a_newer_version(tmp_path: Path) -> None:
    """Protects normal evolution: a newer version replaces the stored one."""
    store = FileTopologyStore(tmp_path / "topology.json")
    first = make_topology(version=1)
    store.save(first)
    newer = first.with_shards({name: dsn.replace("5501", "6601") for name, dsn in SHARDS.items()})
    store.save(newer)
    assert store.load() == newer
    assert store.load().version == 2


def test_save_refuses_an_older_version(tmp_path: Path) -> None:
    """Protects against a stale writer silently undoing a newer topology."""
    store = FileTopologyStore(tmp_path / "topology.json")
    store.save(make_topology(version=5))
    with pytest.raises(TopologyError, match="version 4 is not newer than stored 5"):
        store.save(make_topology(version=4))
    assert store.load().version == 5


def test_save_refuses_a_different_topology_at_the_same_version(tmp_path: Path) -> None:
    """Protects against two writers producing different contents under one version number."""
    store = FileTopologyStore(tmp_path / "topology.json")
    store.save(make_topology(version=3))
    with pytest.raises(TopologyError, match="not newer"):
        store.save(make_topology(version=3, overrides={"bob": "shard_a"}))
    assert dict(store.load().overrides) == {}


def test_save_of_the_identical_topology_is_idempotent(tmp_path: Path) -> None:
    """Protects retries: saving exactly the stored topology again succeeds."""
    store = FileTopologyStore(tmp_path / "topology.json")
    topology = make_topology(version=3)
    store.save(topology)
    store.save(topology)
    assert store.load() == topology


def test_load_of_missing_file_explains_what_to_do(tmp_path: Path) -> None:
    """Protects the first-run experience: a missing file names the path and the fix."""
    path = tmp_path / "nowhere" / "topology.json"
    with pytest.raises(TopologyError) as caught:
        FileTopologyStore(path).load()
    message = str(caught.value)
    assert str(path) in message
    assert "wallet dev up" in message and "WALLET_TOPOLOGY" in message
    assert isinstance(caught.value.__cause__, FileNotFoundError)


@pytest.mark.parametrize("content", ["", "not json", '{"version": 1,', "version: 1\n"])
def test_load_of_non_json_file_raises_topology_error(tmp_path: Path, content: str) -> None:
    """Protects against a corrupted file surfacing as a raw JSONDecodeError."""
    path = tmp_path / "topology.json"
    path.write_text(content)
    with pytest.raises(TopologyError, match="is not JSON") as caught:
        FileTopologyStore(path).load()
    assert str(path) in str(caught.value)


def test_load_of_json_that_is_not_a_topology_raises_topology_error(tmp_path: Path) -> None:
    """Protects against valid JSON of the wrong shape escaping as AttributeError."""
    path = tmp_path / "topology.json"
    path.write_text("[1, 2, 3]\n")
    with pytest.raises(TopologyError, match="malformed"):
        FileTopologyStore(path).load()


def test_load_of_binary_file_raises_topology_error(tmp_path: Path) -> None:
    """Protects against a binary/garbled topology file escaping as UnicodeDecodeError."""
    path = tmp_path / "topology.json"
    path.write_bytes(b"\xff\xfe\x00garbage\x80")
    with pytest.raises(TopologyError):
        FileTopologyStore(path).load()


def test_save_over_corrupted_file_refuses(tmp_path: Path) -> None:
    """Protects against overwriting a file the store cannot read (it cannot check the version)."""
    path = tmp_path / "topology.json"
    path.write_text("garbage")
    with pytest.raises(TopologyError, match="is not JSON"):
        FileTopologyStore(path).save(make_topology())
    assert path.read_text() == "garbage"


def test_save_leaves_no_temporary_files(tmp_path: Path) -> None:
    """Protects atomic replace: after several saves only the topology file remains."""
    store = FileTopologyStore(tmp_path / "topology.json")
    topology = make_topology()
    for _ in range(5):
        store.save(topology)
        topology = topology.with_shards(dict(topology.shards))
    assert sorted(entry.name for entry in tmp_path.iterdir()) == ["topology.json"]
    assert store.load().version == 5


def test_refused_save_leaves_no_temporary_files(tmp_path: Path) -> None:
    """Protects the directory from debris when a save is refused."""
    store = FileTopologyStore(tmp_path / "topology.json")
    store.save(make_topology(version=2))
    with pytest.raises(TopologyError):
        store.save(make_topology(version=1))
    assert sorted(entry.name for entry in tmp_path.iterdir()) == ["topology.json"]
