"""The `wallet` command line for people: accounts, deposits, transfers, and clear errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

from launchers.postgres import LocalCluster
from tests.helpers import accounts_on

REPOSITORY = Path(__file__).resolve().parent.parent


def wallet(cluster: LocalCluster, *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "coordinator.cli.main", *arguments],
        cwd=REPOSITORY,
        env={**os.environ, "WALLET_HOME": str(cluster.home)},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_money_commands(cluster: LocalCluster) -> None:
    """Create, deposit, transfer (one shard and across shards), show, freeze: each says what happened."""
    topology = cluster.topology
    alice, bob = accounts_on(topology, "shard0", 2)
    (carol,) = accounts_on(topology, "shard3", 1)
    for account_id in (alice, bob, carol):
        created = wallet(cluster, "accounts", "create", account_id, "--owner", account_id, "--currency", "EUR")
        assert created.returncode == 0 and json.loads(created.stdout)["created"] is True
    assert wallet(cluster, "deposit", alice, "20.00").returncode == 0
    key = str(uuid.uuid4())
    moved = wallet(cluster, "transfer", alice, bob, "5.25", "--currency", "EUR", "--transaction-id", key)
    assert moved.returncode == 0 and json.loads(moved.stdout)["protocol"] == "local"
    across = wallet(cluster, "transfer", alice, carol, "1.00", "--currency", "EUR", "--mode", "tcc")
    assert across.returncode == 0 and json.loads(across.stdout)["protocol"] == "tcc"
    assert json.loads(wallet(cluster, "show-transfer", key).stdout)["amount"] == "5.25"
    assert json.loads(wallet(cluster, "accounts", "show", alice).stdout)["balance"] == "13.75"

    poor = wallet(cluster, "transfer", bob, alice, "99.00", "--currency", "EUR")
    assert poor.returncode == 1 and json.loads(poor.stdout)["error_code"] == "insufficient_funds"
    assert json.loads(wallet(cluster, "accounts", "freeze", carol).stdout)["status"] == "frozen"
    frozen = wallet(cluster, "transfer", alice, carol, "1.00", "--currency", "EUR", "--mode", "saga")
    assert frozen.returncode == 1 and json.loads(frozen.stdout)["phase"] == "compensated"

    bad = wallet(cluster, "transfer", alice, bob, "1.001", "--currency", "EUR")
    assert bad.returncode == 2 and "invalid_amount" in bad.stderr and "Traceback" not in bad.stderr
    missing = wallet(cluster, "accounts", "show", "nobody-here")
    assert missing.returncode == 2 and "account_not_found" in missing.stderr
