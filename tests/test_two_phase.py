"""Cross-shard transfers by two-phase commit, against real shards."""

from __future__ import annotations

import asyncio
import random
import uuid

import pytest

from coordinator.service.wallet import WalletService
from core.domain.errors import WalletError
from shard_router.topology import Topology
from tests.helpers import accounts_on, assert_outbox_explains, balances, open_accounts, prepared_count, send_all

SHARDS = ("shard0", "shard1", "shard2", "shard3")


async def test_concurrent_random_cross_shard_transfers(service: WalletService, topology: Topology) -> None:
    """Thousands of concurrent transfers over all shards: money conserved, every reported
    success applied exactly once, no prepared transaction left behind."""
    rng = random.Random(11)
    everyone = [a for shard in SHARDS for a in accounts_on(topology, shard, 5)]
    await open_accounts(service, everyone, deposit="50.00")
    requests = [(pair[0], pair[1], rng.randint(1, 3000)) for pair in (rng.sample(everyone, 2) for _ in range(3000))]

    outcomes, expected = await send_all(service, requests, {account_id: 5000 for account_id in everyone})
    assert set(outcomes) <= {"success", "failed"}, set(outcomes)
    assert await balances(service, everyone) == expected
    assert "failed" in outcomes and "success" in outcomes
    assert service.rounds.groups_applied["2pc"] < service.rounds.transfers_applied["2pc"]
    assert await prepared_count(topology) == 0
    await assert_outbox_explains(topology, everyone)


async def test_opposite_transfers_racing_do_not_deadlock(service: WalletService, topology: Topology) -> None:
    """A->B and B->A across two shards, hundreds at once from two coordinators: all finish."""
    (alice,), (bob,) = accounts_on(topology, "shard0", 1), accounts_on(topology, "shard3", 1)
    await open_accounts(service, [alice, bob], deposit="1000.00")
    async with WalletService(topology, service.settings) as other:
        calls = []
        for index in range(400):
            coordinator = service if index % 2 else other
            source, target = (alice, bob) if index % 4 < 2 else (bob, alice)
            calls.append(coordinator.transfer(source, target, "1.00", "USD", str(uuid.uuid4())))
        results = await asyncio.wait_for(asyncio.gather(*calls), timeout=120)
    assert {r.status for r in results} == {"success"}
    assert await balances(service, [alice, bob]) == {alice: 100_000, bob: 100_000}


async def test_frozen_receiver_fails_alone(service: WalletService, topology: Topology) -> None:
    """A frozen receiver on another shard fails its transfer; batch-mates still land."""
    alice, carol = accounts_on(topology, "shard1", 2)
    (frozen,), (bob,) = accounts_on(topology, "shard2", 1), accounts_on(topology, "shard3", 1)
    await open_accounts(service, [alice, carol, frozen, bob], deposit="10.00")
    await service.set_account_status(frozen, "frozen")
    refused, *fine = await asyncio.gather(
        service.transfer(alice, frozen, "3.00", "USD", str(uuid.uuid4())),
        *(service.transfer(carol, bob, "1.00", "USD", str(uuid.uuid4())) for _ in range(5)),
    )
    assert (refused.status, refused.error_code, refused.protocol) == ("failed", "account_frozen", "2pc")
    assert {r.status for r in fine} == {"success"}
    assert await balances(service, [alice, carol, frozen, bob]) == {alice: 1000, carol: 500, frozen: 1000, bob: 1500}


async def test_cross_shard_idempotency(service: WalletService, topology: Topology) -> None:
    """A cross-shard retry replays; a changed body conflicts; GET shows the outcome."""
    (alice,), (bob,) = accounts_on(topology, "shard0", 1), accounts_on(topology, "shard2", 1)
    await open_accounts(service, [alice, bob], deposit="10.00")
    key = str(uuid.uuid4())
    first = await service.transfer(alice, bob, "4.00", "USD", key)
    again = await service.transfer(alice, bob, "4.00", "USD", key)
    assert first == again and first.status == "success" and first.protocol == "2pc"
    with pytest.raises(WalletError) as conflict:
        await service.transfer(alice, bob, "4.01", "USD", key)
    assert conflict.value.code == "idempotency_conflict"
    shown = await service.get_transfer(key)
    assert (shown.status, shown.phase, shown.protocol) == ("success", "committed", "2pc")
    assert await balances(service, [alice, bob]) == {alice: 600, bob: 1400}
