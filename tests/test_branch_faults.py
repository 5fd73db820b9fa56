"""TC/C and Saga under a coordinator SIGKILLed at each step: recovery drives every
unfinished transfer to its end, holds are released, retries learn the truth, and every
transfer is applied exactly once."""
from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from coordinator.service import WalletService
from shard_router.topology import Topology
from shards.cluster import LocalCluster
from tests.conftest import accounts_on, open_accounts
from tests.outbox_check import assert_outbox_explains
from tests.test_tcc_saga import reserved_of, unfinished_phases
from tests.test_two_phase import balances
from tests.test_two_phase_faults import expected_after_all_once, retry_until_known

REPOSITORY = Path(__file__).resolve().parent.parent
SHARDS = ("shard0", "shard1", "shard2", "shard3")


@pytest.mark.parametrize(("mode", "fault_point"), [
    ("tcc", "tcc.after_try_debit"),
    ("tcc", "tcc.after_try_credit"),
    ("tcc", "tcc.after_decision"),
    ("tcc", "tcc.after_confirm_credit"),
    ("saga", "saga.after_debit"),
    ("saga", "saga.after_credit"),
])
async def test_coordinator_killed_at_each_step(
    service: WalletService, topology: Topology, cluster: LocalCluster, tmp_path: Path, mode: str, fault_point: str
) -> None:
    """SIGKILL at a named step, then one recovery pass and the clients' retries."""
    rng = random.Random(fault_point)
    everyone = [a for shard in SHARDS for a in accounts_on(topology, shard, 3)]
    await open_accounts(service, everyone, deposit="100.00")
    transfers = []
    for _ in range(40):
        source, target = rng.sample(everyone, 2)
        while topology.shard_of(source) == topology.shard_of(target):
            source, target = rng.sample(everyone, 2)
        transfers.append({"from": source, "to": target, "amount": f"{rng.randint(1, 500) / 100:.2f}", "id": str(uuid.uuid4())})
    plan = tmp_path / "transfers.json"
    plan.write_text(json.dumps(transfers))
    victim = subprocess.run(
        [sys.executable, "-m", "tests.victim", str(cluster.topology_path), str(plan), mode],
        cwd=REPOSITORY, env={**os.environ, "WALLET_FAULT_POINT": fault_point}, capture_output=True, text=True, timeout=120,
    )
    assert victim.returncode == -signal.SIGKILL, f"the victim was not killed at {fault_point}: {victim.stderr}"
    assert await unfinished_phases(topology) > 0

    report = await service.recover(abort_after_ms=0)
    assert not report.errors and report.resumed > 0
    assert await unfinished_phases(topology) == 0
    assert await reserved_of(service, everyone) == 0
    assert sum((await balances(service, everyone)).values()) == 10_000 * len(everyone)

    for transfer in transfers:
        transfer["mode"] = mode
    statuses = await asyncio.gather(*(retry_until_known(service, t) for t in transfers))
    assert set(statuses) == {"success"}
    assert await balances(service, everyone) == expected_after_all_once({a: 10_000 for a in everyone}, transfers)
    await assert_outbox_explains(topology, everyone)
