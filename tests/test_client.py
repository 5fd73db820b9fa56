"""wallet_client, the API's Python client: checked against the OpenAPI document (a method per
operation, a field per property), used against the real app on real shards, and its retry
learning the true outcome of a transfer whose coordinator was killed in mid-commit."""

from __future__ import annotations

import asyncio
import dataclasses
import random
import re
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest

import wallet_client
from chaos.processes import Coordinator
from coordinator.api import openapi
from coordinator.api.app import build_app
from coordinator.service.wallet import WalletService
from core.runtime.settings import Settings
from launchers.postgres import LocalCluster, free_port
from shard_router.topology import Topology
from tests.helpers import TEST_SECRET, accounts_on, balances, bearer
from wallet_client import ApiError, Attempt, Pending, RetryPolicy, Transfer, UnknownOutcome, WalletClient, models

# response schema (components) -> the client's model
MODELS = {
    "Account": models.Account,
    "Transfer": models.Transfer,
    "Pending": models.Pending,
    "BatchResult": models.BatchResult,
    "BalanceAt": models.BalanceAt,
    "History": models.History,
    "HistoryItem": models.HistoryItem,
    "Ready": models.Ready,
    "ProblemType": models.ProblemType,
}


def snake(operation_id: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", operation_id).lower()


def test_a_method_for_every_operation_and_a_field_for_every_property() -> None:
    """Protects the client from drifting off the document: every operationId has its method,
    every response model has exactly the schema's properties."""
    for operation in openapi.OPERATIONS:
        assert callable(getattr(WalletClient, snake(operation.operation_id), None)), operation.operation_id
    components = openapi.document()["components"]["schemas"]
    for name, model in MODELS.items():
        own = {field.name for field in dataclasses.fields(model)} - {"etag"}  # etag: the header, kept beside
        assert own == set(components[name]["properties"]), name


@pytest.fixture
async def client(service: WalletService, settings: Settings) -> AsyncIterator[WalletClient]:
    app = build_app(settings, service=service)
    token = bearer()["Authorization"].split(" ", 1)[1]
    async with WalletClient("http://wallet.test", token=token, transport=httpx.ASGITransport(app=app)) as opened:
        yield opened


async def test_every_operation_through_the_client(
    client: WalletClient, service: WalletService, topology: Topology
) -> None:
    (alice,) = accounts_on(topology, "shard0", 1)
    (bob,) = accounts_on(topology, "shard2", 1)
    account, created = await client.create_account(alice, "alice", "USD")
    assert created and account.balance == "0.00"
    assert (await client.create_account(alice, "alice", "USD"))[1] is False
    await client.create_account(bob, "bob", "USD")
    deposit = await client.deposit(alice, "20.00", "USD")
    assert deposit.succeeded and deposit.kind == "deposit"
    moved = await client.transfer(alice, bob, "5.00", "USD", mode="tcc")
    assert moved.succeeded and moved.protocol == "tcc"
    assert await client.wait_final(moved.transaction_id) == await client.get_transfer(moved.transaction_id)
    again = await client.transfer(alice, bob, "5.00", "USD", transaction_id=moved.transaction_id, mode="tcc")
    assert again.transaction_id == moved.transaction_id, "a retry with the same id gets the first answer"
    with pytest.raises(ApiError) as refused:
        await client.transfer(alice, bob, "500.00", "USD")
    assert (refused.value.status, refused.value.code) == (409, "insufficient_funds")

    seen = await client.get_account(alice)
    assert seen is not None and seen.balance == "15.00" and seen.etag
    assert await client.get_account(alice, if_none_match=seen.etag) is None, "unchanged: a 304"
    results = await client.transfer_batch(
        [{"from_account": alice, "to_account": bob, "amount": "1.00", "currency": "USD"}, {"from_account": alice}]
    )
    assert [(r.status, r.code) for r in results] == [("success", None), ("failed", "validation_error")]
    assert [e.event for e in [event async for event in client.transfer_events(moved.transaction_id)]] == ["final"]
    assert service.ledger is not None
    await service.ledger.drain()  # the history is the ledger's: relay the outboxes first
    history = await client.get_history(bob)
    assert [item.amount for item in history.items] == ["5.00", "1.00"]
    assert (await client.get_balance_at(bob, "2000-01-01T00:00:00Z")).balance == "0.00"
    assert (await client.problem_type("insufficient_funds")).status == 409
    assert await client.health() == "ok"
    assert (await client.ready()).status == "ready"
    assert "wallet_transfers_total" in await client.metrics()
    with pytest.raises(ApiError) as missing:
        await client.get_transfer(str(uuid.uuid4()))
    assert missing.value.code == "transfer_not_found"


def seed_starting_at(index: int, urls: int) -> int:
    """A seed whose client starts its first call at urls[index]."""
    return next(seed for seed in range(1000) if random.Random(seed).randrange(urls) == index)


async def test_a_retry_learns_what_a_killed_coordinator_did(
    cluster: LocalCluster, service: WalletService, topology: Topology
) -> None:
    """Protects 'nothing lost, nothing applied twice' from the client's side: the coordinator it
    sent a cross-shard transfer to dies right after the commit decision (SIGKILL: its HTTP
    process answers 503 shard_unavailable, the outcome unknown, or nothing if it went first);
    the client retries with the same id on the other coordinator and learns it succeeded, and
    the money moved exactly once."""
    (source,) = accounts_on(topology, "shard0", 1)
    (target,) = accounts_on(topology, "shard3", 1)
    for account_id in (source, target):
        await service.create_account(account_id, "owner", "USD")
    await service.deposit(source, "10.00", str(uuid.uuid4()))
    environment = {"WALLET_AUTH_SECRET": TEST_SECRET, "WALLET_LOG_LEVEL": "warning"}
    victim, healthy = (
        Coordinator(index, free_port(), cluster.topology_path, cluster.home, environment) for index in (71, 72)
    )
    victim.start(fault_point="2pc.after_decision")
    healthy.start()
    try:
        assert await asyncio.to_thread(victim.wait_ready) and await asyncio.to_thread(healthy.wait_ready)
        token = bearer()["Authorization"].split(" ", 1)[1]
        attempts: list[Attempt] = []
        async with WalletClient(
            [victim.url, healthy.url],
            token=token,
            seed=seed_starting_at(0, 2),
            retry=RetryPolicy(attempts_max=30, deadline_s=60),
        ) as client:
            moved = await client.transfer(source, target, "2.50", "USD", mode="2pc", on_attempt=attempts.append)
        assert victim.killed_itself(), "the first coordinator died at the commit decision"
        assert moved.succeeded and moved.protocol == "2pc"
        assert attempts[0].status in (None, 503) and attempts[0].code in (None, "shard_unavailable"), (
            f"the first attempt's outcome was unknown: {attempts}"
        )
        assert attempts[-1].status == 200
    finally:
        victim.kill()
        healthy.stop()
    await service.recover(abort_after_ms=0)
    assert await balances(service, [source, target]) == {source: 750, target: 250}, "applied once"


async def test_retry_is_bounded_and_says_the_outcome_is_unknown() -> None:
    """With no coordinator answering, the client stops at its budget and names the id."""
    async with WalletClient(
        f"http://127.0.0.1:{free_port()}", token="t", retry=RetryPolicy(attempts_max=3, deadline_s=5, wait_s_max=0.05)
    ) as client:
        seen: list[Attempt] = []
        with pytest.raises(UnknownOutcome) as unknown:
            await client.transfer(
                "a", "b", "1.00", "USD", transaction_id="6f1d3c2b-8a4e-4f0b-b7d5-1e9c0a2f3b44", on_attempt=seen.append
            )
    assert unknown.value.transaction_id == "6f1d3c2b-8a4e-4f0b-b7d5-1e9c0a2f3b44"
    assert len(seen) == 3 and all(attempt.status is None for attempt in seen)


def test_what_is_exported() -> None:
    assert {"WalletClient", "RetryPolicy", "ApiError", "UnknownOutcome", "Transfer", "Pending"} <= set(
        wallet_client.__all__
    )
    assert Transfer is models.Transfer and Pending is models.Pending
