"""Pure tests of the account -> slot -> shard mapping and its document form."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zlib
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from shard_router.slots import SLOT_COUNT, slot_of
from shard_router.topology import Topology, TopologyError

REPO_ROOT = Path(__file__).resolve().parent.parent

SHARDS = {
    "shard_a": "postgresql://wallet@127.0.0.1:5501/wallet",
    "shard_b": "postgresql://wallet@127.0.0.1:5502/wallet",
    "shard_c": "postgres://wallet@127.0.0.1:5503/wallet",
}


def make_document(**changes: Any) -> dict[str, Any]:
    """A valid two-shard document, with top-level keys replaced by `changes`."""
    document: dict[str, Any] = {
        "version": 3,
        "slot_count": SLOT_COUNT,
        "shards": {"shard_a": {"dsn": SHARDS["shard_a"]}, "shard_b": {"dsn": SHARDS["shard_b"]}},
        "slots": [
            {"first": 0, "last": 2047, "shard": "shard_a"},
            {"first": 2048, "last": SLOT_COUNT - 1, "shard": "shard_b"},
        ],
        "overrides": {"vip-account": "shard_b"},
    }
    document.update(changes)
    return document


# --- slots -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("account_id", "expected_slot"),
    [("alice", 3143), ("bob", 320), ("acct-0001", 4083), ("Zürich-€", 2787), ("a", 3651)],
)
def test_slot_of_is_pinned_to_crc32(account_id: str, expected_slot: int) -> None:
    """Protects routing stability: a slot is CRC32(utf-8 id) % 4096, forever."""
    assert slot_of(account_id) == expected_slot
    assert slot_of(account_id) == zlib.crc32(account_id.encode("utf-8")) % SLOT_COUNT


def test_slot_count_is_4096() -> None:
    """Protects the deployment constant that every stored topology depends on."""
    assert SLOT_COUNT == 4096


def test_slot_of_stays_in_range() -> None:
    """Protects against slots outside 0..SLOT_COUNT-1 for arbitrary ids."""
    for index in range(2000):
        assert 0 <= slot_of(f"account-{index}") < SLOT_COUNT


def test_slot_of_does_not_use_salted_hash() -> None:
    """Protects against routing with Python's per-process salted hash()."""
    program = (
        "from shard_router.slots import slot_of\n"
        "ids = ['alice', 'bob', 'acct-0001', 'Zürich-€']\n"
        "print([slot_of(i) for i in ids], [hash(i) for i in ids])\n"
    )
    outputs = []
    for seed in ("1", "2"):
        environment = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONIOENCODING": "utf-8"}
        completed = subprocess.run(
            [sys.executable, "-c", program],
            cwd=REPO_ROOT,
            env=environment,
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        outputs.append(completed.stdout.strip())
    slots_one, hashes_one = outputs[0].split("] [")
    slots_two, hashes_two = outputs[1].split("] [")
    assert hashes_one != hashes_two, "the seeds should change hash(); the check is meaningless otherwise"
    assert slots_one == slots_two == "[3143, 320, 4083, 2787"


def test_slot_of_refuses_empty_id() -> None:
    """Protects against routing an empty account id."""
    with pytest.raises(AssertionError):
        slot_of("")


# --- Topology.even -----------------------------------------------------------


def test_even_covers_every_slot_with_known_shards() -> None:
    """Protects full coverage: an even topology maps every slot to a named shard."""
    topology = Topology.even(SHARDS)
    assert len(topology.slots) == SLOT_COUNT
    assert set(topology.slots) == set(SHARDS)
    assert sum(len(topology.slots_of(name)) for name in SHARDS) == SLOT_COUNT


@pytest.mark.parametrize("shard_count", [1, 2, 3, 4, 5, 7, 16])
def test_even_is_balanced_and_contiguous(shard_count: int) -> None:
    """Protects balance: shard slot counts differ by at most one, in contiguous ranges in name order."""
    shards = {f"shard_{index:02d}": f"postgresql://h/{index}" for index in range(shard_count)}
    topology = Topology.even(shards)
    counts = Counter(topology.slots)
    assert len(counts) == shard_count
    assert max(counts.values()) - min(counts.values()) <= 1
    # Contiguous and in sorted name order: the slot list is non-decreasing.
    assert list(topology.slots) == sorted(topology.slots)
    for name in shards:
        owned = topology.slots_of(name)
        assert owned == list(range(owned[0], owned[-1] + 1))


def test_even_default_version_is_one_and_no_overrides() -> None:
    """Protects the starting point of a fresh deployment: version 1, no pins."""
    topology = Topology.even(SHARDS)
    assert topology.version == 1
    assert dict(topology.overrides) == {}
    assert Topology.even(SHARDS, version=9).version == 9


def test_shard_of_follows_slot() -> None:
    """Protects the default route: an unpinned account goes to its slot's owner."""
    topology = Topology.even(SHARDS)
    for account_id in ("alice", "bob", "acct-0001"):
        assert topology.shard_of(account_id) == topology.slots[slot_of(account_id)]
    # 320 is in the first third, 3143 and 4083 in the last.
    assert topology.shard_of("bob") == "shard_a"
    assert topology.shard_of("alice") == "shard_c"


# --- overrides ---------------------------------------------------------------


def test_override_pins_an_account_to_another_shard() -> None:
    """Protects the directory: an override wins over the slot, and only for that account."""
    base = Topology.even(SHARDS)
    assert base.shard_of("bob") == "shard_a"
    pinned = Topology(base.version, SHARDS, base.slots, overrides={"bob": "shard_c"})
    assert pinned.shard_of("bob") == "shard_c"
    assert pinned.shard_of("alice") == base.shard_of("alice")
    assert pinned.shard_of("acct-0001") == base.shard_of("acct-0001")


def test_topology_mappings_are_frozen() -> None:
    """Protects a shared Topology from changing under a router when the caller's dicts change."""
    shards = dict(SHARDS)
    overrides = {"bob": "shard_c"}
    topology = Topology(1, shards, Topology.even(SHARDS).slots, overrides)
    shards["shard_z"] = "postgresql://h/z"
    overrides["bob"] = "shard_a"
    assert "shard_z" not in topology.shards
    assert topology.shard_of("bob") == "shard_c"
    with pytest.raises(TypeError):
        topology.overrides["alice"] = "shard_a"  # type: ignore[index]  # writes a read-only mapping, on purpose


# --- document round trip -----------------------------------------------------


def test_document_round_trip_preserves_topology() -> None:
    """Protects storage: to_document then from_document (through JSON) gives an equal topology."""
    slots = list(Topology.even(SHARDS).slots)
    slots[5] = "shard_c"  # a hole in shard_a's range makes three extra ranges
    topology = Topology(7, SHARDS, tuple(slots), overrides={"bob": "shard_b", "zed": "shard_a"})
    document = json.loads(json.dumps(topology.to_document()))
    restored = Topology.from_document(document)
    assert restored == topology
    assert restored.version == 7
    assert dict(restored.overrides) == {"bob": "shard_b", "zed": "shard_a"}
    assert restored.shard_of("bob") == "shard_b"


def test_document_uses_compact_ranges() -> None:
    """Protects the readable document form: slot ranges, not 4096 names."""
    document = Topology.even({"shard_a": SHARDS["shard_a"], "shard_b": SHARDS["shard_b"]}).to_document()
    assert document["slot_count"] == SLOT_COUNT
    assert document["slots"] == [
        {"first": 0, "last": 2047, "shard": "shard_a"},
        {"first": 2048, "last": 4095, "shard": "shard_b"},
    ]
    assert document["shards"] == {"shard_a": {"dsn": SHARDS["shard_a"]}, "shard_b": {"dsn": SHARDS["shard_b"]}}
    assert document["overrides"] == {}


def test_from_document_reads_valid_document() -> None:
    """Protects reading a hand-written document, overrides included."""
    topology = Topology.from_document(make_document())
    assert topology.version == 3
    assert topology.slots[2047] == "shard_a" and topology.slots[2048] == "shard_b"
    assert topology.shard_of("vip-account") == "shard_b"


def test_from_document_overrides_are_optional() -> None:
    """Protects older documents that have no overrides key."""
    document = make_document()
    del document["overrides"]
    assert dict(Topology.from_document(document).overrides) == {}


# --- with_shards -------------------------------------------------------------


def test_with_shards_bumps_version_and_keeps_placement() -> None:
    """Protects readdressing: new DSNs, same slots and overrides, version + 1."""
    topology = Topology(4, SHARDS, Topology.even(SHARDS).slots, overrides={"bob": "shard_c"})
    moved = {name: dsn.replace("127.0.0.1", "10.0.0.9") for name, dsn in SHARDS.items()}
    readdressed = topology.with_shards(moved)
    assert readdressed.version == 5
    assert dict(readdressed.shards) == moved
    assert readdressed.slots == topology.slots
    assert readdressed.overrides == topology.overrides
    assert topology.version == 4  # the original is untouched


def test_with_shards_refuses_a_different_shard_set() -> None:
    """Protects against with_shards being used to add or drop shards."""
    topology = Topology.even(SHARDS)
    with pytest.raises(AssertionError):
        topology.with_shards({"shard_a": SHARDS["shard_a"]})


# --- TopologyError paths: constructor ----------------------------------------


def test_topology_error_is_a_value_error() -> None:
    """Protects callers that catch ValueError around topology loading."""
    assert issubclass(TopologyError, ValueError)


@pytest.mark.parametrize("version", [0, -1, "1", 1.0, None])
def test_constructor_refuses_bad_version(version: Any) -> None:
    """Protects against versions below 1 or not integers."""
    with pytest.raises(TopologyError, match="version"):
        Topology(version, SHARDS, Topology.even(SHARDS).slots)


def test_constructor_refuses_no_shards() -> None:
    """Protects against a topology with no shards."""
    with pytest.raises(TopologyError, match="at least one shard"):
        Topology(1, {}, ("shard_a",) * SLOT_COUNT)


@pytest.mark.parametrize("name", ["Shard_a", "1shard", "shard-a", "", "shard a", "s" * 64, "_shard"])
def test_constructor_refuses_bad_shard_name(name: str) -> None:
    """Protects the shard name pattern (lower-case identifier, at most 63 characters)."""
    with pytest.raises(TopologyError, match="shard name"):
        Topology(1, {name: "postgresql://h/db"}, (name,) * SLOT_COUNT)


def test_constructor_accepts_longest_shard_name() -> None:
    """Protects the upper bound of the name pattern: 63 characters is allowed."""
    name = "s" * 63
    assert Topology(1, {name: "postgresql://h/db"}, (name,) * SLOT_COUNT).slots[0] == name


@pytest.mark.parametrize("dsn", ["mysql://h/db", "http://h/db", "", "host=h dbname=db", None, 5432])
def test_constructor_refuses_bad_dsn(dsn: Any) -> None:
    """Protects against non-PostgreSQL or non-string DSNs."""
    with pytest.raises(TopologyError, match="postgresql:// DSN"):
        Topology(1, {"shard_a": dsn}, ("shard_a",) * SLOT_COUNT)


@pytest.mark.parametrize("slot_total", [0, 1, SLOT_COUNT - 1, SLOT_COUNT + 1])
def test_constructor_refuses_wrong_slot_total(slot_total: int) -> None:
    """Protects against a slot table that does not map exactly SLOT_COUNT slots."""
    with pytest.raises(TopologyError, match=f"all {SLOT_COUNT} slots"):
        Topology(1, {"shard_a": SHARDS["shard_a"]}, ("shard_a",) * slot_total)


def test_constructor_refuses_unknown_shard_in_slots() -> None:
    """Protects against slots owned by a shard with no address."""
    slots = ("shard_a",) * (SLOT_COUNT - 1) + ("shard_x",)
    with pytest.raises(TopologyError, match="unknown shards: \\['shard_x'\\]"):
        Topology(1, {"shard_a": SHARDS["shard_a"]}, slots)


def test_constructor_refuses_unknown_shard_in_overrides() -> None:
    """Protects against pinning an account to a shard with no address."""
    with pytest.raises(TopologyError, match="override for 'bob' names unknown shard 'shard_x'"):
        Topology(1, SHARDS, Topology.even(SHARDS).slots, overrides={"bob": "shard_x"})


# --- TopologyError paths: documents ------------------------------------------


@pytest.mark.parametrize("slot_count", [4095, 4097, 1024, None, "4096"])
def test_from_document_refuses_wrong_slot_count(slot_count: Any) -> None:
    """Protects against reading a document written for another slot count."""
    with pytest.raises(TopologyError, match="slot_count must be 4096"):
        Topology.from_document(make_document(slot_count=slot_count))


def test_from_document_refuses_missing_slot_count() -> None:
    """Protects against documents without a slot_count."""
    document = make_document()
    del document["slot_count"]
    with pytest.raises(TopologyError, match="slot_count"):
        Topology.from_document(document)


def test_from_document_refuses_overlapping_ranges() -> None:
    """Protects against one slot owned by two shards."""
    slots = [
        {"first": 0, "last": 2048, "shard": "shard_a"},
        {"first": 2048, "last": SLOT_COUNT - 1, "shard": "shard_b"},
    ]
    with pytest.raises(TopologyError, match="slot 2048 is mapped twice"):
        Topology.from_document(make_document(slots=slots))


def test_from_document_refuses_unmapped_slots() -> None:
    """Protects against a gap in the slot ranges."""
    slots = [
        {"first": 0, "last": 99, "shard": "shard_a"},
        {"first": 200, "last": SLOT_COUNT - 1, "shard": "shard_b"},
    ]
    with pytest.raises(TopologyError, match="100 slots are unmapped, first 100"):
        Topology.from_document(make_document(slots=slots))


@pytest.mark.parametrize(("first", "last"), [(-1, 10), (10, 5), (0, SLOT_COUNT)])
def test_from_document_refuses_out_of_range_slots(first: int, last: int) -> None:
    """Protects against ranges that are reversed or reach outside 0..4095."""
    slots = [{"first": first, "last": last, "shard": "shard_a"}]
    with pytest.raises(TopologyError, match="outside"):
        Topology.from_document(make_document(slots=slots))


def test_from_document_refuses_unknown_shard_in_slots() -> None:
    """Protects against a document whose ranges name a shard it does not address."""
    slots = [
        {"first": 0, "last": 2047, "shard": "shard_a"},
        {"first": 2048, "last": SLOT_COUNT - 1, "shard": "shard_x"},
    ]
    with pytest.raises(TopologyError, match="unknown shards"):
        Topology.from_document(make_document(slots=slots))


def test_from_document_refuses_unknown_shard_in_overrides() -> None:
    """Protects against a document that pins an account to an unknown shard."""
    with pytest.raises(TopologyError, match="names unknown shard"):
        Topology.from_document(make_document(overrides={"bob": "shard_x"}))


def test_from_document_refuses_bad_shard_name() -> None:
    """Protects the shard name pattern when read from a document."""
    shards = {"Shard-A": {"dsn": SHARDS["shard_a"]}}
    slots = [{"first": 0, "last": SLOT_COUNT - 1, "shard": "Shard-A"}]
    with pytest.raises(TopologyError, match="shard name"):
        Topology.from_document(make_document(shards=shards, slots=slots, overrides={}))


@pytest.mark.parametrize("dsn", ["mysql://h/db", None])
def test_from_document_refuses_bad_dsn(dsn: Any) -> None:
    """Protects against a document addressing a shard with a non-PostgreSQL DSN."""
    shards = {"shard_a": {"dsn": dsn}, "shard_b": {"dsn": SHARDS["shard_b"]}}
    with pytest.raises(TopologyError, match="postgresql:// DSN"):
        Topology.from_document(make_document(shards=shards))


@pytest.mark.parametrize("version", [0, -5])
def test_from_document_refuses_version_below_one(version: int) -> None:
    """Protects against documents with a version below 1."""
    with pytest.raises(TopologyError, match="positive integer"):
        Topology.from_document(make_document(version=version))


@pytest.mark.parametrize(
    "document",
    [
        None,
        [],
        "topology",
        {"slot_count": SLOT_COUNT},  # no slots
        {k: v for k, v in make_document().items() if k != "version"},
        {k: v for k, v in make_document().items() if k != "shards"},
        make_document(slots=None),
        make_document(slots=["0-4095"]),
        make_document(slots=[{"first": 0, "shard": "shard_a"}]),
        make_document(slots=[{"first": 0, "last": SLOT_COUNT - 1}]),
        make_document(shards=["shard_a", "shard_b"]),
        make_document(shards={"shard_a": "postgresql://h/db", "shard_b": "postgresql://h/db"}),
        make_document(shards={"shard_a": {}, "shard_b": {"dsn": SHARDS["shard_b"]}}),
        make_document(overrides=["bob"]),
        make_document(version=None),
    ],
    ids=[
        "none",
        "list",
        "string",
        "no-slots",
        "no-version",
        "no-shards",
        "slots-none",
        "slot-entry-string",
        "slot-entry-no-last",
        "slot-entry-no-shard",
        "shards-list",
        "shard-spec-string",
        "shard-spec-no-dsn",
        "overrides-list",
        "version-none",
    ],
)
def test_from_document_refuses_malformed_documents(document: Any) -> None:
    """Protects loading: structurally broken documents raise TopologyError, not KeyError/TypeError."""
    with pytest.raises(TopologyError):
        Topology.from_document(document)


@pytest.mark.parametrize(
    "document",
    [
        make_document(version="three"),
        make_document(slots=[{"first": "zero", "last": SLOT_COUNT - 1, "shard": "shard_a"}]),
    ],
    ids=["version-text", "slot-first-text"],
)
def test_from_document_refuses_non_numeric_fields(document: dict[str, Any]) -> None:
    """Protects loading: non-numeric version or slot bounds raise TopologyError."""
    with pytest.raises(TopologyError):
        Topology.from_document(document)


def test_from_document_refuses_fractional_version() -> None:
    """Protects against silently truncating a non-integer version."""
    with pytest.raises(TopologyError):
        Topology.from_document(make_document(version=1.9))


def test_boolean_version_is_refused() -> None:
    """Protects against True passing for version 1 (bool is an int in Python)."""
    with pytest.raises(TopologyError):
        Topology.from_document(make_document(version=True))
