"""TC/C and Saga across shards, against real shards: concurrency, refusals, barrier
behaviour with messages delivered out of order on purpose, and recovery."""

from __future__ import annotations

import random
import uuid

import pytest

from coordinator.protocols import branch_steps as branches
from coordinator.service.wallet import WalletService
from core.domain.branch_plan import Branch, BranchOp, Operation
from core.domain.errors import WalletError
from core.domain.transfers import Transfer
from shard_router.topology import Topology
from tests.helpers import (
    SHARDS,
    accounts_on,
    assert_outbox_explains,
    balances,
    bearer,
    fetch,
    open_accounts,
    reserved_of,
    send_all,
    settled_value,
    unfinished_phases,
)


@pytest.mark.parametrize("mode", ["tcc", "saga"])
async def test_concurrent_random_transfers(service: WalletService, topology: Topology, mode: str) -> None:
    """Thousands of concurrent cross-shard transfers: conserved, each reported success applied
    once, no hold left open, every phase state done, outbox explains every account."""
    rng = random.Random(mode)
    everyone = [a for shard in SHARDS for a in accounts_on(topology, shard, 5)]
    await open_accounts(service, everyone, deposit="50.00")
    requests = []
    for _ in range(2000):
        source, target = rng.sample(everyone, 2)
        requests.append((source, target, rng.randint(1, 3000)))

    outcomes, expected = await send_all(service, requests, {account_id: 5000 for account_id in everyone}, mode)
    assert set(outcomes) <= {"success", "failed"}, set(outcomes)
    assert await balances(service, everyone) == expected
    assert "failed" in outcomes and "success" in outcomes
    assert await reserved_of(service, everyone) == 0
    assert await unfinished_phases(topology) == 0
    await assert_outbox_explains(topology, everyone)


@pytest.mark.parametrize(
    ("mode", "phase", "kinds"),
    [
        ("tcc", "cancelled", ["deposit", "hold", "release"]),
        ("saga", "compensated", ["deposit", "debit", "compensate"]),
    ],
)
async def test_frozen_receiver_is_cancelled_or_compensated(
    service: WalletService, topology: Topology, mode: str, phase: str, kinds: list[str]
) -> None:
    """A frozen receiver: TC/C cancels (the hold returns), Saga compensates (the debit is
    credited back). Sender whole, receiver untouched, the record says why."""
    (alice,), (frozen,) = accounts_on(topology, "shard0", 1), accounts_on(topology, "shard1", 1)
    await open_accounts(service, [alice, frozen], deposit="10.00")
    await service.set_account_status(frozen, "frozen")
    key = str(uuid.uuid4())
    result = await service.transfer(alice, frozen, "4.00", "USD", key, mode=mode)
    assert (result.status, result.error_code, result.phase, result.protocol) == (
        "failed",
        "account_frozen",
        phase,
        mode,
    )
    assert await balances(service, [alice, frozen]) == {alice: 1000, frozen: 1000}
    assert await reserved_of(service, [alice]) == 0
    events = await fetch(topology, "shard0", "SELECT kind FROM outbox WHERE account_id = $1 ORDER BY version", alice)
    assert [e["kind"] for e in events] == kinds
    assert (await service.transfer(alice, frozen, "4.00", "USD", key, mode=mode)) == result


@pytest.mark.parametrize("mode", ["tcc", "saga"])
async def test_insufficient_funds_and_idempotency(service: WalletService, topology: Topology, mode: str) -> None:
    """Try refuses on funds; a retry replays; a different body conflicts."""
    (alice,), (bob,) = accounts_on(topology, "shard2", 1), accounts_on(topology, "shard3", 1)
    await open_accounts(service, [alice, bob], deposit="3.00")
    poor = await service.transfer(alice, bob, "5.00", "USD", str(uuid.uuid4()), mode=mode)
    assert (poor.status, poor.error_code) == ("failed", "insufficient_funds")
    key = str(uuid.uuid4())
    done = await service.transfer(alice, bob, "1.00", "USD", key, mode=mode)
    assert done.status == "success" and done == await service.transfer(alice, bob, "1.00", "USD", key, mode=mode)
    with pytest.raises(WalletError) as conflict:
        await service.transfer(alice, bob, "1.50", "USD", key, mode=mode)
    assert conflict.value.code == "idempotency_conflict"
    assert (await service.get_transfer(key)).phase == ("confirmed" if mode == "tcc" else "completed")
    assert await balances(service, [alice, bob]) == {alice: 200, bob: 400}


async def branch_op(service: WalletService, shard: str, transfer: Transfer, branch: Branch, operation: Operation):
    (outcome,) = await branches.run_branch_ops(service.shards, shard, [BranchOp(transfer, branch, operation)])
    return outcome


async def test_barrier_repeats_do_nothing(service: WalletService, topology: Topology) -> None:
    """A repeated Try, Confirm or Cancel changes nothing the second time."""
    (alice,), (bob,) = accounts_on(topology, "shard0", 1), accounts_on(topology, "shard1", 1)
    await open_accounts(service, [alice, bob], deposit="10.00")
    transfer = Transfer(str(uuid.uuid4()), "transfer", alice, bob, 300, "USD", "tcc")
    assert (await branch_op(service, "shard0", transfer, "debit", "try")).note == "applied"
    assert (await branch_op(service, "shard0", transfer, "debit", "try")).note == "repeat"
    assert (await service.get_account(alice)).reserved == 300
    assert (await branch_op(service, "shard0", transfer, "debit", "confirm")).note == "applied"
    assert (await branch_op(service, "shard0", transfer, "debit", "confirm")).note == "repeat"
    assert (await branch_op(service, "shard1", transfer, "credit", "try")).note == "applied"
    assert (await branch_op(service, "shard1", transfer, "credit", "confirm")).note == "applied"
    assert (await branch_op(service, "shard1", transfer, "credit", "confirm")).note == "repeat"
    assert await balances(service, [alice, bob]) == {alice: 700, bob: 1300}
    assert await reserved_of(service, [alice]) == 0

    other = Transfer(str(uuid.uuid4()), "transfer", alice, bob, 200, "USD", "tcc")
    await branch_op(service, "shard0", other, "debit", "try")
    assert (await branch_op(service, "shard0", other, "debit", "cancel")).note == "applied"
    assert (await branch_op(service, "shard0", other, "debit", "cancel")).note == "repeat"
    assert (await service.get_account(alice)).reserved == 0 and (await service.get_account(alice)).balance == 700


@pytest.mark.parametrize("branch", ["debit", "credit"])
async def test_cancel_before_try_then_late_try(service: WalletService, topology: Topology, branch: Branch) -> None:
    """Out of order on purpose: a Cancel arriving before its Try is a null compensation, and
    the Try arriving after it is refused, so no hold hangs and no money moves."""
    (alice,), (bob,) = accounts_on(topology, "shard2", 1), accounts_on(topology, "shard3", 1)
    await open_accounts(service, [alice, bob], deposit="10.00")
    shard = "shard2" if branch == "debit" else "shard3"
    for mode in ("tcc", "saga"):
        transfer = Transfer(str(uuid.uuid4()), "transfer", alice, bob, 500, "USD", mode)
        cancelled = await branch_op(service, shard, transfer, branch, "cancel")
        assert (cancelled.ok, cancelled.note, cancelled.out_of_order) == (True, "null_compensation", True)
        late = await branch_op(service, shard, transfer, branch, "try")
        assert (late.ok, late.note, late.error_code) == (False, "late_try_refused", "transfer_aborted")
        assert (await branch_op(service, shard, transfer, branch, "cancel")).note == "repeat"
    assert await balances(service, [alice, bob]) == {alice: 1000, bob: 1000}
    assert await reserved_of(service, [alice, bob]) == 0


async def test_refused_try_closes_the_branch(service: WalletService, topology: Topology) -> None:
    """A Saga credit refused (receiver frozen) stays refused when delivered again after the
    receiver is unfrozen: money credited after compensation would be money created."""
    (alice,), (bob,) = accounts_on(topology, "shard0", 1), accounts_on(topology, "shard3", 1)
    await open_accounts(service, [alice, bob], deposit="10.00")
    await service.set_account_status(bob, "frozen")
    transfer = Transfer(str(uuid.uuid4()), "transfer", alice, bob, 100, "USD", "saga")
    assert (await branch_op(service, "shard3", transfer, "credit", "try")).error_code == "account_frozen"
    await service.set_account_status(bob, "active")
    again = await branch_op(service, "shard3", transfer, "credit", "try")
    assert (again.ok, again.note) == (False, "late_try_refused")
    assert (await service.get_account(bob)).balance == 1000


async def test_http_accepts_every_mode(service: WalletService, topology: Topology) -> None:
    """The same pair moved by each mode; each record names its protocol."""
    (alice,), (bob,) = accounts_on(topology, "shard1", 1), accounts_on(topology, "shard2", 1)
    await open_accounts(service, [alice, bob], deposit="9.00")
    protocols = []
    for mode in ("2pc", "tcc", "saga"):
        protocols.append((await service.transfer(alice, bob, "1.00", "USD", str(uuid.uuid4()), mode=mode)).protocol)
    assert protocols == ["2pc", "tcc", "saga"]
    assert await balances(service, [alice, bob]) == {alice: 600, bob: 1200}


async def test_unfinished_transfer_shows_its_phase(service: WalletService, topology: Topology, settings) -> None:
    """A TC/C transfer stopped after its Try shows as pending/trying over HTTP, then as
    confirmed once recovery has finished it."""
    import httpx

    from coordinator.api.app import build_app

    (alice,), (bob,) = accounts_on(topology, "shard0", 1), accounts_on(topology, "shard2", 1)
    await open_accounts(service, [alice, bob], deposit="5.00")
    transfer = Transfer(str(uuid.uuid4()), "transfer", alice, bob, 100, "USD", "tcc")
    (start,) = await branches.try_debits(service.shards, "shard0", [transfer], settled_value({}))
    assert start.kind == "held"
    app = build_app(settings, service=service)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://wallet.test", headers=bearer()
    ) as client:
        pending = await client.get(f"/v1/transfers/{transfer.transaction_id}")
        assert pending.status_code == 202 and pending.json()["phase"] == "trying"
        await service.recover(abort_after_ms=0)
        done = await client.get(f"/v1/transfers/{transfer.transaction_id}")
        assert done.status_code == 200 and done.json()["phase"] == "confirmed"
    assert await balances(service, [alice, bob]) == {alice: 400, bob: 600}
