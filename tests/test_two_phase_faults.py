"""Two-phase commit under faults: the coordinator SIGKILLed at each protocol step, and a
shard server stopped and restarted mid-transfer. After recovery, every transfer is
all-or-nothing, a client retry learns the true outcome, and money is conserved."""

from __future__ import annotations

import asyncio
import random
import uuid
from pathlib import Path

import pytest

from coordinator.service.wallet import WalletService
from core.domain.errors import WalletError
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
    prepared_count,
    retry_until_known,
)

REPOSITORY = Path(__file__).resolve().parent.parent
SHARDS = ("shard0", "shard1", "shard2", "shard3")


@pytest.mark.parametrize(
    ("fault_point", "decided", "leftovers"),
    [
        # Written everywhere, the decision among the decision shard's writes, nothing prepared:
        # the dead coordinator's transactions roll back with its connections.
        ("2pc.after_writes", False, False),
        ("2pc.after_first_prepare", False, True),
        ("2pc.after_all_prepares", False, True),
        ("2pc.after_decision", True, True),
        # Phase two sends every COMMIT PREPARED at once; the servers finish those already
        # sent when the coordinator dies, so nothing need be left for recovery here.
        ("2pc.after_first_commit", True, False),
    ],
)
async def test_coordinator_killed_at_each_step(
    service: WalletService,
    topology: Topology,
    cluster: LocalCluster,
    tmp_path: Path,
    fault_point: str,
    decided: bool,
    leftovers: bool,
) -> None:
    """SIGKILL at a named step: recovery commits a decided batch and rolls back an
    undecided one; retries then apply every transfer exactly once."""
    everyone = [a for shard in SHARDS for a in accounts_on(topology, shard, 3)]
    await open_accounts(service, everyone, deposit="100.00")
    transfers = cross_shard_transfers(topology, everyone, 40, fault_point)
    kill_at(cluster.topology_path, transfers, fault_point, "2pc", tmp_path)
    if leftovers:
        assert await prepared_count(topology) > 0, "a coordinator killed here leaves prepared transactions"

    report = await service.recover(abort_after_ms=0)
    assert not report.errors and report.waiting == 0
    if leftovers:
        assert (report.committed > 0) == decided and (report.rolled_back > 0) == (not decided)
    assert report.rolled_back == 0 or not decided
    assert await prepared_count(topology) == 0

    # Before any retry: the batch is all-or-nothing, so the total is intact.
    assert sum((await balances(service, everyone)).values()) == 10_000 * len(everyone)
    found = 0
    for transfer in transfers:
        try:
            await service.get_transfer(transfer["id"])
            found += 1
        except WalletError as error:
            assert error.code == "transfer_not_found"
    assert (found > 0) == decided

    statuses = await asyncio.gather(*(retry_until_known(service, t) for t in transfers))
    assert set(statuses) == {"success"}
    assert await balances(service, everyone) == expected_after_all_once({a: 10_000 for a in everyone}, transfers)
    await assert_outbox_explains(topology, everyone)


async def test_shard_stopped_and_restarted_mid_transfer(
    service: WalletService, topology: Topology, cluster: LocalCluster
) -> None:
    """A shard crashes (immediate stop) under load and comes back: after recovery and
    client retries, each transfer happened once and money is conserved."""
    rng = random.Random(5)
    everyone = [a for shard in SHARDS for a in accounts_on(topology, shard, 4)]
    await open_accounts(service, everyone, deposit="100.00")
    transfers = [
        {"from": s, "to": t, "amount": f"{rng.randint(1, 300) / 100:.2f}", "id": str(uuid.uuid4())}
        for s, t in (rng.sample(everyone, 2) for _ in range(600))
    ]

    async def send(transfer: dict[str, str]) -> None:
        await asyncio.sleep(rng.random() * 1.5)
        try:
            await service.transfer(transfer["from"], transfer["to"], transfer["amount"], "USD", transfer["id"])
        except WalletError:
            pass  # unknown outcome: the client retries below

    async def crash_and_restart() -> None:
        await asyncio.sleep(0.5)
        await asyncio.to_thread(cluster.stop_shard, "shard2", "immediate")
        await asyncio.sleep(1.0)
        await asyncio.to_thread(cluster.start_shard, "shard2")

    await asyncio.gather(crash_and_restart(), *(send(t) for t in transfers))
    await service.recover(abort_after_ms=0)
    statuses = await asyncio.gather(*(retry_until_known(service, t) for t in transfers))
    # Retries with the true outcome: a transfer refused for funds stays refused, and
    # one that landed is not applied again; account state tells which happened.
    assert set(statuses) <= {"success", "failed"}
    applied = [t for t, status in zip(transfers, statuses, strict=True) if status == "success"]
    await service.recover(abort_after_ms=0)
    assert await prepared_count(topology) == 0
    assert await balances(service, everyone) == expected_after_all_once({a: 10_000 for a in everyone}, applied)
    await assert_outbox_explains(topology, everyone)
