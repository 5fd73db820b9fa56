"""One-shard transfers through the service, against real shards."""

from __future__ import annotations

import asyncio
import random
import uuid

import pytest

from coordinator.service.wallet import WalletService
from core.domain.errors import WalletError
from core.domain.transfers import TransferResult
from shard_router.topology import Topology
from tests.helpers import accounts_on, assert_outbox_explains, batches_held, open_accounts, send_all

SHARDS = ("shard0", "shard1", "shard2", "shard3")


async def balances(service: WalletService, ids: list[str]) -> dict[str, int]:
    return {account_id: (await service.get_account(account_id)).balance for account_id in ids}


async def test_concurrent_random_transfers_conserve_money(service: WalletService, topology: Topology) -> None:
    """Thousands of concurrent one-shard transfers: money conserved, no negative
    balance, and every reported success applied exactly once (no failure applied)."""
    rng = random.Random(7)
    by_shard = {shard: accounts_on(topology, shard, 6) for shard in SHARDS}
    everyone = [a for ids in by_shard.values() for a in ids]
    await open_accounts(service, everyone, deposit="100.00")
    requests = []
    for _ in range(3000):
        source, target = rng.sample(by_shard[rng.choice(SHARDS)], 2)
        requests.append((source, target, rng.randint(1, 4000)))

    outcomes, expected = await send_all(service, requests, {account_id: 10_000 for account_id in everyone})
    assert set(outcomes) <= {"success", "failed"}, set(outcomes)
    actual = await balances(service, everyone)
    assert actual == expected
    assert sum(actual.values()) == 10_000 * len(everyone)
    assert min(actual.values()) >= 0
    assert "failed" in outcomes, "the workload should hit insufficient funds"
    assert service.rounds.groups_applied["shard0"] < service.rounds.transfers_applied["shard0"], (
        "concurrent requests should share batches"
    )
    await assert_outbox_explains(service.topology, everyone)


async def test_retry_returns_first_result_whatever_happened_since(service: WalletService, topology: Topology) -> None:
    """A failed transfer stays failed on retry, even after the sender was topped up."""
    source, target = accounts_on(topology, "shard1", 2)
    await open_accounts(service, [source, target], deposit="1.00")
    key = str(uuid.uuid4())
    first = await service.transfer(source, target, "5.00", "USD", key)
    assert (first.status, first.error_code) == ("failed", "insufficient_funds")
    await service.deposit(source, "10.00", str(uuid.uuid4()))
    again = await service.transfer(source, target, "5.00", "USD", key)
    assert (again.status, again.error_code) == ("failed", "insufficient_funds")
    assert (await service.get_account(source)).balance == 1100

    key = str(uuid.uuid4())
    done = await service.transfer(source, target, "2.50", "USD", key, mode="saga")
    repeat = await service.transfer(source, target, "2.50", "USD", key)  # mode is not part of the promise
    assert done.status == repeat.status == "success"
    assert (await service.get_account(source)).balance == 850
    assert (await service.get_account(target)).balance == 350


async def test_concurrent_duplicates_apply_once(service: WalletService, topology: Topology) -> None:
    """Fifty copies of one request racing each other move the money once."""
    source, target = accounts_on(topology, "shard2", 2)
    await open_accounts(service, [source, target], deposit="10.00")
    key = str(uuid.uuid4())
    results = await asyncio.gather(*(service.transfer(source, target, "1.00", "USD", key) for _ in range(50)))
    assert {r.status for r in results} == {"success"}
    assert (await service.get_account(source)).balance == 900
    assert (await service.get_account(target)).balance == 1100


async def test_duplicates_from_two_coordinators_apply_once(
    service: WalletService, topology: Topology, settings
) -> None:
    """Two coordinator instances retrying the same transfer at once apply it once."""
    source, target = accounts_on(topology, "shard3", 2)
    await open_accounts(service, [source, target], deposit="10.00")
    async with WalletService(topology, settings) as other:
        for _ in range(20):
            key = str(uuid.uuid4())
            results = await asyncio.gather(
                service.transfer(source, target, "0.10", "USD", key), other.transfer(source, target, "0.10", "USD", key)
            )
            assert [r.status for r in results] == ["success", "success"]
    assert (await service.get_account(source)).balance == 800


async def test_idempotency_conflict_on_same_shard_and_across_shards(service: WalletService, topology: Topology) -> None:
    """The same transaction_id with a different body is refused, even when the new
    body's source account lives on another shard."""
    source, target = accounts_on(topology, "shard0", 2)
    other_source, other_target = accounts_on(topology, "shard1", 2)
    await open_accounts(service, [source, target, other_source, other_target], deposit="10.00")
    key = str(uuid.uuid4())
    assert (await service.transfer(source, target, "1.00", "USD", key)).status == "success"
    with pytest.raises(WalletError) as same_shard:
        await service.transfer(source, target, "2.00", "USD", key)
    assert same_shard.value.code == "idempotency_conflict"
    with pytest.raises(WalletError) as across:
        await service.transfer(other_source, other_target, "1.00", "USD", key)
    assert across.value.code == "idempotency_conflict"
    with pytest.raises(WalletError) as deposit:
        await service.deposit(source, "1.00", key)
    assert deposit.value.code == "idempotency_conflict"
    assert (await service.get_account(other_source)).balance == 1000


async def test_deposits_are_idempotent(service: WalletService, topology: Topology) -> None:
    """A deposit retried with its transaction_id lands once."""
    (account,) = accounts_on(topology, "shard3", 1)
    await open_accounts(service, [account])
    key = str(uuid.uuid4())
    for _ in range(3):
        assert (await service.deposit(account, "7.25", key)).status == "success"
    assert (await service.get_account(account)).balance == 725
    with pytest.raises(WalletError) as error:
        await service.deposit(account, "7.26", key)
    assert error.value.code == "idempotency_conflict"


async def test_hot_account_receives_from_many(service: WalletService, topology: Topology) -> None:
    """A merchant receiving from hundreds of payers at once gets every credit."""
    merchant, *payers = accounts_on(topology, "shard0", 201)
    await open_accounts(service, [merchant, *payers], deposit="1.00")
    results = await asyncio.gather(
        *(service.transfer(payer, merchant, "0.40", "USD", str(uuid.uuid4())) for payer in payers)
    )
    assert {r.status for r in results} == {"success"}
    assert (await service.get_account(merchant)).balance == 100 + 200 * 40


@pytest.mark.parametrize(
    ("case", "code"),
    [
        ("insufficient", "insufficient_funds"),
        ("missing_target", "account_not_found"),
        ("missing_source", "account_not_found"),
        ("frozen_source", "account_frozen"),
        ("frozen_target", "account_frozen"),
        ("other_currency", "currency_mismatch"),
    ],
)
async def test_business_refusals_are_recorded(service: WalletService, topology: Topology, case: str, code: str) -> None:
    """Each business refusal has its code, moves nothing, and is replayed on retry."""
    source, target, euro = accounts_on(topology, "shard1", 3)
    await open_accounts(service, [source, target], deposit="5.00")
    await service.create_account(euro, "eve", "EUR")
    amount, currency = "1.00", "USD"
    if case == "insufficient":
        amount = "5.01"
    elif case == "missing_target":
        target = accounts_on(topology, "shard1", 1, prefix="ghost")[0]
    elif case == "missing_source":
        source = accounts_on(topology, "shard1", 1, prefix="ghost")[0]
    elif case == "frozen_source":
        await service.set_account_status(source, "frozen")
    elif case == "frozen_target":
        await service.set_account_status(target, "frozen")
    elif case == "other_currency":
        target = euro
    key = str(uuid.uuid4())
    for _ in range(2):
        result = await service.transfer(source, target, amount, currency, key)
        assert (result.status, result.error_code) == ("failed", code)
    fetched = await service.get_transfer(key)
    assert (fetched.status, fetched.error_code, fetched.phase) == ("failed", code, "aborted")


@pytest.mark.parametrize(
    ("arguments", "code"),
    [
        (("a", "a", "1.00", "USD"), "same_account"),
        (("a", "b", "0", "USD"), "invalid_amount"),
        (("a", "b", "-1.00", "USD"), "invalid_amount"),
        (("a", "b", "1.001", "USD"), "invalid_amount"),
        (("a", "b", 1.5, "USD"), "invalid_amount"),
        (("a", "b", "1.00", "XXX"), "unsupported_currency"),
        (("a b", "b", "1.00", "USD"), "validation_error"),
        (("a", "", "1.00", "USD"), "validation_error"),
    ],
)
async def test_bad_input_is_refused_before_any_shard(
    service: WalletService, arguments: tuple[str, str, str, str], code: str
) -> None:
    """Bad input gets its code and never reaches a shard."""
    with pytest.raises(WalletError) as error:
        await service.transfer(*arguments, str(uuid.uuid4()))
    assert error.value.code == code


async def test_bad_transaction_id_and_mode(service: WalletService) -> None:
    """transaction_id must be a UUID; mode one of 2pc, tcc, saga."""
    with pytest.raises(WalletError) as bad_id:
        await service.transfer("a", "b", "1.00", "USD", "not-a-uuid")
    assert bad_id.value.code == "validation_error"
    with pytest.raises(WalletError) as bad_mode:
        await service.transfer("a", "b", "1.00", "USD", str(uuid.uuid4()), mode="xa")
    assert bad_mode.value.code == "validation_error"


async def test_account_creation_is_idempotent_and_conflicts_otherwise(service: WalletService) -> None:
    """Creating the same account twice is a no-op; with other details it is refused."""
    account_id = f"acct-{uuid.uuid4().hex[:8]}"
    first, created = await service.create_account(account_id, "bob", "JPY")
    again, created_again = await service.create_account(account_id, "bob", "JPY")
    assert (created, created_again) == (True, False) and first == again
    with pytest.raises(WalletError) as error:
        await service.create_account(account_id, "bob", "USD")
    assert error.value.code == "account_exists"
    with pytest.raises(WalletError) as missing:
        await service.get_account(f"nobody-{uuid.uuid4().hex[:8]}")
    assert missing.value.code == "account_not_found"


async def test_batch_call_answers_each_item_once(service: WalletService, topology: Topology) -> None:
    """Protects the batch path (transfer_many): bad items fail alone, an id repeated inside the
    call is applied once and both items get its answer, and nothing stays in flight."""
    alice, bob = accounts_on(topology, "shard0", 2)
    (carol,) = accounts_on(topology, "shard1", 1)
    await open_accounts(service, [alice, bob, carol], deposit="10.00")
    repeated = str(uuid.uuid4())
    items: list[dict[str, str]] = [
        {"from_account": alice, "to_account": bob, "amount": "1.00", "currency": "USD", "transaction_id": repeated},
        {
            "from_account": alice,
            "to_account": carol,
            "amount": "2.00",
            "currency": "USD",
            "transaction_id": str(uuid.uuid4()),
            "mode": "2pc",
        },
        {"from_account": alice, "to_account": bob, "amount": "1.00", "currency": "USD", "transaction_id": repeated},
        {
            "from_account": alice,
            "to_account": bob,
            "amount": "-1",
            "currency": "USD",
            "transaction_id": str(uuid.uuid4()),
        },
        {
            "from_account": bob,
            "to_account": carol,
            "amount": "99.00",
            "currency": "USD",
            "transaction_id": str(uuid.uuid4()),
        },
    ]
    first, cross, again, bad, poor = await service.transfer_many(items)
    assert isinstance(first, TransferResult) and first.status == "success"
    assert isinstance(again, TransferResult) and again.transfer.transaction_id == first.transfer.transaction_id
    assert isinstance(cross, TransferResult) and cross.status == "success" and cross.protocol == "2pc"
    assert isinstance(bad, WalletError) and bad.code == "invalid_amount"
    assert isinstance(poor, TransferResult) and poor.error_code == "insufficient_funds"
    assert (await service.get_account(alice)).balance == 700  # 1.00 once, 2.00 once
    assert not service.inflight


async def test_cancelled_batch_call_leaves_nothing_in_flight(service: WalletService, topology: Topology) -> None:
    """Protects ids of a batch call whose caller went away (a client disconnect cancels it):
    they do not stay registered, and a retry with the same id gets the true outcome."""
    alice, bob = accounts_on(topology, "shard2", 2)
    await open_accounts(service, [alice, bob], deposit="10.00")
    key = str(uuid.uuid4())
    item: dict[str, str] = {
        "from_account": alice,
        "to_account": bob,
        "amount": "3.00",
        "currency": "USD",
        "transaction_id": key,
    }
    with batches_held(service, "shard2") as release:
        call = asyncio.create_task(service.transfer_many([item]))
        while not service.in_flight(key):
            await asyncio.sleep(0.01)
        call.cancel()
        await asyncio.gather(call, return_exceptions=True)
        assert not service.in_flight(key)
        release.set()
    retried = await service.transfer(alice, bob, "3.00", "USD", key)
    assert retried.status == "success"
    assert (await service.get_account(alice)).balance == 700  # applied once, by the batch or the retry
