"""`wallet topology` as a DBA uses it with ZooKeeper: store the topology, add a shard,
migrate it, move slots to it online, pin an account; each step's errors explained."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from launchers.postgres import LocalCluster
from shard_router.slots import slot_of
from shard_router.topology import FIRST_LEDGER, Topology
from tests.helpers import make_home

WALLET = str(Path(sys.executable).parent / "wallet")
MOVED = range(0, 16)


@pytest.fixture(scope="module")
def two_servers() -> Iterator[LocalCluster]:
    cluster = LocalCluster(make_home("dba"), shard_count=2)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def wallet(*args: str, environment: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [WALLET, *args], env={**os.environ, **environment}, capture_output=True, text=True, timeout=300
    )


def test_dba_adds_a_shard_and_moves_slots_to_it(
    two_servers: LocalCluster, zookeeper: str, zk_root: str, tmp_path: Path
) -> None:
    """Protects the documented DBA flow, end to end through the command line."""
    addresses = two_servers.topology.shards
    first = Topology.even({"shard0": addresses["shard0"]}, ledger=two_servers.topology.ledgers[FIRST_LEDGER].dsn)
    document = tmp_path / "topology.json"
    document.write_text(json.dumps(first.to_document()))
    environment = {"WALLET_ZK_HOSTS": zookeeper, "WALLET_ZK_ROOT": zk_root, "WALLET_HOME": str(tmp_path)}

    assert wallet("topology", "show", environment=environment).returncode == 2  # nothing stored yet
    assert wallet("topology", "init", "--from", str(document), environment=environment).returncode == 0
    again = wallet("topology", "init", "--from", str(document), environment=environment)
    assert again.returncode == 0, again.stderr  # the same document: a no-op
    assert wallet("db", "upgrade", "--all", environment=environment).returncode == 0

    ids = [f"dba-{i}" for i in range(400)]
    moving = [a for a in ids if slot_of(a) in MOVED][:3] or pytest.fail("no id in the moved slots")
    staying = [a for a in ids if slot_of(a) not in MOVED][:3]
    for account_id in moving + staying:
        assert (
            wallet(
                "accounts", "create", account_id, "--owner", "o", "--currency", "EUR", environment=environment
            ).returncode
            == 0
        )
        assert wallet("deposit", account_id, "7.00", environment=environment).returncode == 0

    added = wallet("topology", "set-shard", "shard1", addresses["shard1"], environment=environment)
    assert added.returncode == 0 and "owning 0 slots" in added.stdout and "db upgrade --shard shard1" in added.stdout
    assert wallet("db", "upgrade", "--shard", "shard1", environment=environment).returncode == 0
    moved = wallet("topology", "move-slot", f"{MOVED[0]}-{MOVED[-1]}", "shard1", environment=environment)
    assert moved.returncode == 0, moved.stderr
    assert moved.stdout.count("shard0 -> shard1") == len(MOVED)

    shown = json.loads(wallet("topology", "show", environment=environment).stdout)
    assert shown["slots"][0] == {"first": MOVED[0], "last": MOVED[-1], "shard": "shard1"}
    for account_id in moving + staying:
        account = wallet("accounts", "show", account_id, environment=environment)
        assert account.returncode == 0 and '"7.00"' in account.stdout, account.stdout + account.stderr

    pinned = wallet("topology", "pin", "vip-merchant", "shard1", environment=environment)
    assert pinned.returncode == 0, pinned.stderr
    assert (
        wallet(
            "accounts", "create", "vip-merchant", "--owner", "o", "--currency", "EUR", environment=environment
        ).returncode
        == 0
    )
    assert json.loads(wallet("topology", "show", environment=environment).stdout)["overrides"] == {
        "vip-merchant": "shard1"
    }
    refused = wallet("topology", "pin", staying[0], "shard1", environment=environment)
    assert refused.returncode == 2 and "already exists" in refused.stderr
    bad = wallet("topology", "move-slot", "4096", "shard1", environment=environment)
    assert bad.returncode == 2 and "0..4095" in bad.stderr
    unknown = wallet("topology", "move-slot", "7", "shard9", environment=environment)
    assert unknown.returncode == 2 and "no shard 'shard9'" in unknown.stderr
