"""Operations over the real app on real shards: readiness, metrics that move with
transfers, push status (server-sent events, long poll), JSON logs with the transaction id."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest
from starlette.routing import Route

from coordinator.api.app import build_app
from coordinator.api.metrics import Metrics
from coordinator.service.wallet import WalletService
from core.runtime.settings import Settings
from ledger.chain import Break
from shard_router.topology import Topology
from tests.helpers import BACKENDS, accounts_on, app_over, batches_held, bearer, captured_logs, fetch, sample


@pytest.fixture(params=BACKENDS)
async def http(
    request: pytest.FixtureRequest, service: WalletService, settings: Settings
) -> AsyncIterator[httpx.AsyncClient]:
    async with app_over(request.param, settings, service) as app:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://wallet.test", headers=bearer()
        ) as client:
            yield client


async def open_pair(http: httpx.AsyncClient, topology: Topology, shards: tuple[str, str]) -> tuple[str, str]:
    (source,) = accounts_on(topology, shards[0], 1)
    (target,) = accounts_on(topology, shards[1], 1)
    for account in (source, target):
        response = await http.post("/v1/accounts", json={"account_id": account, "owner": "o", "currency": "USD"})
        assert response.status_code == 201, response.text
    deposit = await http.post(
        f"/v1/accounts/{source}/deposits",
        json={"amount": "50.00", "currency": "USD", "transaction_id": str(uuid.uuid4())},
    )
    assert deposit.status_code == 200
    return source, target


async def test_health_and_readiness(http: httpx.AsyncClient, topology: Topology) -> None:
    """/healthz says the process is up; /readyz checks every shard and the ledger at head."""
    assert (await http.get("/healthz", headers={})).json() == {"status": "ok"}
    ready = await http.get("/readyz", headers={})
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"] == {**{shard: "ok" for shard in topology.shards}, "ledger": "ok"}
    assert ready.json()["topology_version"] == topology.version


async def test_metrics_move_with_transfers(http: httpx.AsyncClient, topology: Topology) -> None:
    """Transfers by mode and outcome, latency, batch sizes and pool usage show in /metrics."""
    source, target = await open_pair(http, topology, ("shard0", "shard1"))
    before = (await http.get("/metrics")).text
    for mode in ("2pc", "tcc", "saga"):
        body = {
            "from_account": source,
            "to_account": target,
            "amount": "1.00",
            "currency": "USD",
            "transaction_id": str(uuid.uuid4()),
            "mode": mode,
        }
        assert (await http.post("/v1/wallet/balance_transfer", json=body)).status_code == 200
    poor = {
        "from_account": source,
        "to_account": target,
        "amount": "999.00",
        "currency": "USD",
        "transaction_id": str(uuid.uuid4()),
    }
    assert (await http.post("/v1/wallet/balance_transfer", json=poor)).status_code == 409
    after = (await http.get("/metrics")).text
    for mode in ("2pc", "tcc", "saga"):
        labels = {"kind": "transfer", "mode": mode, "outcome": "success"}
        assert (
            sample(after, "wallet_transfers_total", **labels) == sample(before, "wallet_transfers_total", **labels) + 1
        )
    labels = {"kind": "transfer", "mode": "2pc", "outcome": "insufficient_funds"}
    assert sample(after, "wallet_transfers_total", **labels) == sample(before, "wallet_transfers_total", **labels) + 1
    assert sample(after, "wallet_transfer_seconds_count", kind="transfer", mode="tcc") >= 1
    assert sample(after, "wallet_batch_size_count", applier="2pc") >= 2
    assert sample(after, "wallet_transfers_total", kind="deposit", mode="local", outcome="success") >= 1
    for shard in topology.shards:
        assert sample(after, "wallet_shard_up", shard=shard) == 1
        assert sample(after, "wallet_pool_connections_max", shard=shard) > 0
        assert sample(after, "wallet_in_doubt_branches", shard=shard) == 0
    for name in (
        "wallet_open_holds",
        "wallet_outbox_events",
        "wallet_outbox_lag_seconds",
        "wallet_http_requests_total",
    ):
        assert name in after


async def test_events_stream_phases_until_final(
    http: httpx.AsyncClient, service: WalletService, topology: Topology
) -> None:
    """GET /v1/transfers/{id}/events pushes `phase` while the batch is open, then `final`;
    ?wait= answers once final; an unknown id is a 404 at once, never a hanging stream."""
    source, target = await open_pair(http, topology, ("shard2", "shard2"))
    key = str(uuid.uuid4())
    with batches_held(service, "shard2") as release:
        body = {
            "from_account": source,
            "to_account": target,
            "amount": "2.00",
            "currency": "USD",
            "transaction_id": key,
        }
        sending = asyncio.create_task(http.post("/v1/wallet/balance_transfer", json=body))
        while not service.in_flight(key):
            await asyncio.sleep(0.01)
        streaming = asyncio.create_task(http.get(f"/v1/transfers/{key}/events"))
        waiting = asyncio.create_task(http.get(f"/v1/transfers/{key}?wait=10"))
        short = await http.get(f"/v1/transfers/{key}?wait=0")
        assert short.status_code == 202 and short.json()["phase"] == "preparing"
        await asyncio.sleep(0.2)
        assert not waiting.done()
        release.set()
        assert (await sending).status_code == 200
    waited = await waiting
    assert waited.status_code == 200 and waited.json()["phase"] == "committed"
    stream = await streaming
    assert stream.headers["content-type"].startswith("text/event-stream")
    events = [
        (block.split("\n")[0], json.loads(block.split("data: ", 1)[1]))
        for block in stream.text.strip().split("\n\n")
        if block.startswith("event:")
    ]
    assert events[0] == ("event: phase", {"transaction_id": key, "status": "pending", "phase": "preparing"})
    assert events[-1][0] == "event: final" and events[-1][1]["phase"] == "committed"
    missing = await http.get(f"/v1/transfers/{uuid.uuid4()}/events")
    assert missing.status_code == 404 and missing.json()["code"] == "transfer_not_found"
    assert (await http.get(f"/v1/transfers/{key}?wait=31")).status_code == 422


async def test_logs_are_json_with_the_transaction_id(http: httpx.AsyncClient, topology: Topology) -> None:
    """Each log line is one JSON object and carries the request's transaction id; the record
    of each answered transfer is DEBUG only (at INFO the serving loop builds none)."""
    source, target = await open_pair(http, topology, ("shard3", "shard0"))
    body = {
        "from_account": source,
        "to_account": target,
        "amount": "1.00",
        "currency": "USD",
        "transaction_id": str(uuid.uuid4()),
        "mode": "tcc",
    }
    with captured_logs(logging.INFO) as captured:
        assert (await http.post("/v1/wallet/balance_transfer", json=body)).status_code == 200
    assert "transfer answered" not in captured.getvalue()
    key = str(uuid.uuid4())
    with captured_logs(logging.DEBUG) as captured:
        assert (await http.post("/v1/wallet/balance_transfer", json={**body, "transaction_id": key})).status_code == 200
    lines = [json.loads(line) for line in captured.getvalue().splitlines()]
    answered = [line for line in lines if line["message"] == "transfer answered"]
    assert answered and answered[-1]["transaction_id"] == key
    assert answered[-1]["mode"] == "tcc" and answered[-1]["phase"] == "confirmed" and answered[-1]["request_id"]


@pytest.mark.parametrize(
    "mode, phases",
    [
        ("2pc", ["2pc.prepared", "2pc.decided_commit", "2pc.committed"]),
        ("tcc", ["tcc.started_debit", "tcc.tried_credit", "tcc.decided", "tcc.finished_credit"]),
        ("saga", ["saga.started_debit", "saga.credited", "saga.finished"]),
    ],
)
async def test_debug_logs_follow_the_transaction_through_every_phase(
    http: httpx.AsyncClient, topology: Topology, mode: str, phases: list[str]
) -> None:
    """At DEBUG, each protocol step logs one JSON line per batch naming its transaction ids."""
    source, target = await open_pair(http, topology, ("shard1", "shard2"))
    key = str(uuid.uuid4())
    with captured_logs(logging.DEBUG) as captured:
        body = {
            "from_account": source,
            "to_account": target,
            "amount": "1.00",
            "currency": "USD",
            "transaction_id": key,
            "mode": mode,
        }
        assert (await http.post("/v1/wallet/balance_transfer", json=body)).status_code == 200
    lines = [json.loads(line) for line in captured.getvalue().splitlines()]
    seen = [line["phase"] for line in lines if key in line.get("transaction_ids", [])]
    assert seen == phases


async def test_openapi_document_is_served(http: httpx.AsyncClient, service: WalletService, settings: Settings) -> None:
    """/openapi.json describes every route the app serves, with its methods."""
    document = (await http.get("/openapi.json")).json()
    assert document["openapi"].startswith("3.")
    served = {
        (route.path, method.lower())
        for route in build_app(settings, service=service).routes
        if isinstance(route, Route) and route.methods
        for method in route.methods - {"HEAD"}
    }
    described = {(path, method) for path, operations in document["paths"].items() for method in operations}
    assert served - {("/openapi.json", "get")} == described


async def test_metrics_say_how_old_stuck_work_is_and_who_leads(service: WalletService, topology: Topology) -> None:
    """Protects what the alerts read (docker/prometheus/rules.yml): the age of the oldest
    prepared branch and of the oldest unfinished TC/C transfer per shard, whether this process
    leads, each shard's and ledger server's replication, when each stream last grew, and the
    latest ledger verification's result and time."""
    metrics = Metrics()
    batch_id = str(uuid.uuid4())
    gid = f"wallet:2pc:{batch_id}:shard1:shard1"
    held = str(uuid.uuid4())
    (account,) = accounts_on(topology, "shard3", 1)
    await service.create_account(account, "o", "USD")
    await service.deposit(account, "3.00", str(uuid.uuid4()))
    assert service.ledger is not None
    await service.ledger.drain()
    prepared = await asyncpg.connect(topology.shards["shard1"])
    try:
        # a branch left prepared, as by a coordinator killed between PREPARE and its decision
        await prepared.execute("BEGIN")
        await prepared.execute(f"PREPARE TRANSACTION '{gid}'")
        # a TC/C transfer started 90 s ago and never finished
        await fetch(
            topology,
            "shard2",
            "INSERT INTO phase_state (transaction_id, mode, from_account, to_account, amount, currency, request_hash,"
            " debit_try, credit_try, second_state, created_at, updated_at)"
            " VALUES ($1, 'tcc', 'a', 'b', 1, 'USD', '\\x00', 'received', 'sent', 'none',"
            " now() - interval '90 seconds', now() - interval '90 seconds')",
            uuid.UUID(held),
        )
        await asyncio.sleep(1.1)
        await metrics.refresh(service)
        text = metrics.render().decode()
    finally:
        await prepared.execute(f"ROLLBACK PREPARED '{gid}'")
        await prepared.close()
        await fetch(topology, "shard2", "DELETE FROM phase_state WHERE transaction_id = $1", uuid.UUID(held))
    assert sample(text, "wallet_in_doubt_branches", shard="shard1") >= 1
    assert sample(text, "wallet_in_doubt_oldest_seconds", shard="shard1") >= 1.0
    assert sample(text, "wallet_unfinished_oldest_seconds", mode="tcc", shard="shard2") >= 90
    assert sample(text, "wallet_open_holds", shard="shard2") >= 1
    assert sample(text, "wallet_leader", role="singletons") == 1
    for shard in topology.shards:
        assert sample(text, "wallet_shard_up", shard=shard) == 1
        assert sample(text, "wallet_shard_servers", shard=shard) == 1  # the local cluster: one server a shard
        assert sample(text, "wallet_shard_synchronous_standbys", shard=shard) == 0
    (ledger,) = topology.ledgers
    assert sample(text, "wallet_ledger_up", ledger=ledger) == 1
    assert sample(text, "wallet_ledger_servers", ledger=ledger) == 1
    appended = sample(text, "wallet_ledger_last_append_timestamp_seconds", ledger=ledger, stream="shard3")
    assert 0 < time.time() - appended < 60, appended

    # the latest verification: a failed one says 0, a passing one after it 1, each with its time
    broken = Break("shard3", 1, None, "hash mismatch")
    await service.ledger.record_verification([broken], [])
    await metrics.refresh(service)
    assert sample(metrics.render().decode(), "wallet_ledger_verification_ok", ledger=ledger) == 0
    await service.ledger.record_verification(await service.ledger.verify(), [])
    await metrics.refresh(service)
    text = metrics.render().decode()
    assert sample(text, "wallet_ledger_verification_ok", ledger=ledger) == 1
    assert abs(time.time() - sample(text, "wallet_ledger_verification_timestamp_seconds", ledger=ledger)) < 60
