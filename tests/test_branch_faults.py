"""TC/C and Saga under a coordinator SIGKILLed at each step: recovery drives every
unfinished transfer to its end, holds are released, retries learn the truth, and every
transfer is applied exactly once."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from coordinator.service.wallet import WalletService
from launchers.postgres import LocalCluster
from shard_router.topology import Topology
from tests.helpers import (
    accounts_on,
    assert_outbox_explains,
    balances,
    cross_shard_transfers,
    expected_after_all_once,
    kill_at,
    open_accounts,
    reserved_of,
    retry_until_known,
    unfinished_phases,
)

SHARDS = ("shard0", "shard1", "shard2", "shard3")


@pytest.mark.parametrize(
    ("mode", "fault_point"),
    [
        ("tcc", "tcc.after_try_debit"),
        ("tcc", "tcc.after_try_credit"),
        ("tcc", "tcc.after_decision"),
        ("tcc", "tcc.after_confirm_credit"),
        ("saga", "saga.after_debit"),
        ("saga", "saga.after_credit"),
    ],
)
async def test_coordinator_killed_at_each_step(
    service: WalletService, topology: Topology, cluster: LocalCluster, tmp_path: Path, mode: str, fault_point: str
) -> None:
    """SIGKILL at a named step, then one recovery pass and the clients' retries."""
    everyone = [a for shard in SHARDS for a in accounts_on(topology, shard, 3)]
    await open_accounts(service, everyone, deposit="100.00")
    transfers = cross_shard_transfers(topology, everyone, 40, fault_point)
    kill_at(cluster.topology_path, transfers, fault_point, mode, tmp_path)
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
