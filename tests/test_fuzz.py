"""Schemathesis, as a new user would run it, against a real `wallet serve` on real shards:
every check, the examples, coverage, fuzzing and stateful phases, an admin's token. No
failure; the stateful phase walks the document's links to successful transfers; and money
is conserved afterwards (balances move only by the deposits the run made)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from coordinator.service.wallet import WalletService
from core.domain.money import parse_amount
from core.runtime.settings import Settings
from launchers.postgres import LocalCluster, free_port
from shards import two_phase as two_phase_sql
from tests.helpers import REPOSITORY, TEST_SECRET, bearer, eventually

# Bounded: both runs together take about two minutes here.
EXAMPLES_PER_OPERATION = 15
STATEFUL_S = 35
SCENARIO_STEPS_MAX = 20
SCHEMATHESIS = Path(sys.executable).parent / "st"


@pytest.fixture
def served(cluster: LocalCluster) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`wallet serve` on the tests' shards: its URL."""
    port = free_port()
    environment = {key: value for key, value in os.environ.items() if not key.startswith("WALLET_")}
    environment.update(
        {
            "WALLET_HOME": str(cluster.home),
            "WALLET_TOPOLOGY": str(cluster.topology_path),
            "WALLET_PORT": str(port),
            "WALLET_AUTH_SECRET": TEST_SECRET,
            "WALLET_LOG_LEVEL": "warning",
        }
    )
    log = open(cluster.home / f"fuzz-serve-{port}.log", "wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "coordinator.cli.main", "serve"],
        cwd=REPOSITORY,
        env=environment,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        try:
            return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        eventually(ready, "wallet serve to be ready", 60)
        yield url, process
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=30)
        log.close()


async def money_state(cluster: LocalCluster) -> tuple[int, int, int]:
    """(balances summed, reserved summed, prepared branches) once recovery has run."""
    settings = Settings(home=cluster.home, topology_path=cluster.topology_path, auth_secret=TEST_SECRET)
    async with WalletService(cluster.topology, settings) as service:
        await service.recover(abort_after_ms=0)
        balance, reserved, _ = await service.totals()
        prepared = 0
        for shard in sorted(cluster.topology.shards):
            async with service.pools.connection(shard) as connection:
                prepared += len(await two_phase_sql.select_prepared(connection))
        return balance, reserved, prepared


def schemathesis(url: str, phases: str, har: Path, *options: str) -> subprocess.CompletedProcess[str]:
    config = har.with_suffix(".toml")
    config.write_text(f"[phases.stateful]\nmax-steps = {SCENARIO_STEPS_MAX}\n")
    return subprocess.run(
        [
            str(SCHEMATHESIS),
            "--config-file",
            str(config),
            "run",
            f"{url}/openapi.json",
            "--checks",
            "all",
            "--phases",
            phases,
            "--header",
            f"Authorization: {bearer()['Authorization']}",
            "--report",
            "har",
            "--report-har-path",
            str(har),
            "--seed",
            "1",
            *options,
        ],
        cwd=har.parent,
        capture_output=True,
        text=True,
        timeout=600,
    )


def exchanges(har: Path) -> list[tuple[str, str, int, dict[str, object]]]:
    """(method, path, status, JSON body) of every request the run made."""
    found = []
    for entry in json.loads(har.read_text())["log"]["entries"]:
        text = entry["response"]["content"].get("text") or ""
        try:
            body = json.loads(text)
        except ValueError:
            body = {}
        path = "/" + entry["request"]["url"].split("/", 3)[3].split("?")[0]
        found.append(
            (entry["request"]["method"], path, entry["response"]["status"], body if isinstance(body, dict) else {})
        )
    return found


def test_schemathesis_finds_nothing_and_the_stateful_walk_moves_money(
    served: tuple[str, subprocess.Popen[bytes]], cluster: LocalCluster, tmp_path: Path
) -> None:
    url, process = served
    start_balance, _, _ = asyncio.run(money_state(cluster))
    stateless = schemathesis(
        url, "examples,coverage,fuzzing", tmp_path / "stateless.har", "--max-examples", str(EXAMPLES_PER_OPERATION)
    )
    assert stateless.returncode == 0, stateless.stdout[-6000:]
    stateful = schemathesis(url, "stateful", tmp_path / "stateful.har", "--max-time", str(STATEFUL_S))
    assert stateful.returncode == 0, stateful.stdout[-6000:]
    for run in (stateless, stateful):
        counted = re.search(r"(\d+) generated, (\d+) passed", run.stdout)
        assert counted and counted.group(1) == counted.group(2), run.stdout[-3000:]  # every case passed

    walked = exchanges(tmp_path / "stateful.har")
    moved = [body for method, path, status, body in walked if path == "/v1/wallet/balance_transfer" and status == 200]
    assert moved, "the stateful phase reached no successful transfer: the links no longer lead there"
    deposited: dict[object, int] = {}
    for har in ("stateless.har", "stateful.har"):
        for _, path, status, body in exchanges(tmp_path / har):
            if path.endswith("/deposits") and status == 200:
                deposited[body["transaction_id"]] = parse_amount(body["amount"], str(body["currency"]))
    cases = [line for line in stateless.stdout.splitlines() + stateful.stdout.splitlines() if "generated" in line]
    print("schemathesis:", cases, f"; stateful transfers that moved money: {len(moved)}")

    process.terminate()  # the service stops before the money is counted: nothing is in flight
    process.wait(timeout=30)
    end_balance, end_reserved, prepared = asyncio.run(money_state(cluster))
    assert end_reserved == 0 and prepared == 0, "a hold or a prepared branch was left behind"
    assert end_balance == start_balance + sum(deposited.values()), "money appeared or vanished"
