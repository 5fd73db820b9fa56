"""The REST API over real shards: status codes, problem+json bodies, and every error code."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import httpx
import pytest

from coordinator.api.bodies import BODY_BYTES_MAX
from coordinator.service.wallet import WalletService
from shard_router.topology import Topology
from tests.helpers import BACKENDS, accounts_on, app_over, assert_problem, batches_held, bearer


@pytest.fixture(params=BACKENDS)
async def client(request: pytest.FixtureRequest, service: WalletService, settings) -> AsyncIterator[httpx.AsyncClient]:
    """An admin's client (authorization has its own tests in test_security.py), on the app in
    the service's process and over the engine link."""
    async with app_over(request.param, settings, service) as app:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://wallet.test", headers=bearer()) as http:
            yield http


async def create(client: httpx.AsyncClient, account_id: str, currency: str = "USD", deposit: str | None = None) -> None:
    response = await client.post("/v1/accounts", json={"account_id": account_id, "owner": "o", "currency": currency})
    assert response.status_code == 201, response.text
    if deposit:
        response = await client.post(
            f"/v1/accounts/{account_id}/deposits",
            json={"amount": deposit, "currency": currency, "transaction_id": str(uuid.uuid4())},
        )
        assert response.status_code == 200, response.text


async def test_account_lifecycle_and_transfer(client: httpx.AsyncClient, topology: Topology) -> None:
    """The documented happy path: create, deposit, transfer, read back."""
    alice, bob = accounts_on(topology, "shard0", 2)
    await create(client, alice, deposit="25.00")
    await create(client, bob)
    again = await client.post("/v1/accounts", json={"account_id": bob, "owner": "o", "currency": "USD"})
    assert again.status_code == 200
    key = str(uuid.uuid4())
    body = {"from_account": alice, "to_account": bob, "amount": "10.05", "currency": "USD", "transaction_id": key}
    response = await client.post("/v1/wallet/balance_transfer", json=body)
    assert response.status_code == 200
    assert response.json()["status"] == "success" and response.json()["transaction_id"] == key
    retry = await client.post("/v1/wallet/balance_transfer", json=body)
    assert retry.json() == response.json()
    shown = (await client.get(f"/v1/accounts/{alice}")).json()
    assert shown == {
        "account_id": alice,
        "owner": "o",
        "currency": "USD",
        "balance": "14.95",
        "available": "14.95",
        "reserved": "0.00",
        "status": "active",
    }
    transfer = (await client.get(f"/v1/transfers/{key}")).json()
    assert (transfer["status"], transfer["phase"], transfer["amount"], transfer["protocol"]) == (
        "success",
        "committed",
        "10.05",
        "local",
    )


async def test_every_error_code_over_http(
    client: httpx.AsyncClient, service: WalletService, topology: Topology
) -> None:
    """Each documented code is reachable through the API, as problem+json, never a 500."""
    alice, bob, frozen, euro = accounts_on(topology, "shard2", 4)
    await create(client, alice, deposit="1.00")
    await create(client, bob)
    await create(client, frozen)
    await create(client, euro, currency="EUR")
    await service.set_account_status(frozen, "frozen")

    def transfer(**changes: object) -> dict[str, object]:
        body: dict[str, object] = {
            "from_account": alice,
            "to_account": bob,
            "amount": "0.50",
            "currency": "USD",
            "transaction_id": str(uuid.uuid4()),
        }
        body.update(changes)
        return body

    cases = [
        (transfer(amount="0.001"), 422, "invalid_amount"),
        (transfer(amount=0.5), 422, "invalid_amount"),
        (transfer(amount="2.00"), 409, "insufficient_funds"),
        (transfer(to_account=accounts_on(topology, "shard2", 1, prefix="ghost")[0]), 404, "account_not_found"),
        (transfer(to_account=euro), 409, "currency_mismatch"),
        (transfer(to_account=alice), 409, "same_account"),
        (transfer(to_account=frozen), 409, "account_frozen"),
        (transfer(transaction_id="123"), 422, "validation_error"),
        (transfer(mode="xa"), 422, "validation_error"),
        (transfer(currency="ABC"), 422, "unsupported_currency"),
        (transfer(extra="field"), 422, "validation_error"),
    ]
    for body, status, code in cases:
        assert_problem(await client.post("/v1/wallet/balance_transfer", json=body), status, code)
    missing = transfer()
    del missing["amount"]
    assert_problem(await client.post("/v1/wallet/balance_transfer", json=missing), 422, "validation_error")

    key = str(uuid.uuid4())
    assert (await client.post("/v1/wallet/balance_transfer", json=transfer(transaction_id=key))).status_code == 200
    assert_problem(
        await client.post("/v1/wallet/balance_transfer", json=transfer(transaction_id=key, amount="0.10")),
        409,
        "idempotency_conflict",
    )
    assert (await client.get(f"/v1/accounts/{alice}")).json()["balance"] == "0.50"


async def test_malformed_requests(client: httpx.AsyncClient) -> None:
    """Broken JSON, wrong shapes, huge bodies, unknown routes: clear 4xx problems."""
    headers = {"content-type": "application/json"}
    assert_problem(
        await client.post("/v1/wallet/balance_transfer", content=b"{not json", headers=headers),
        400,
        "malformed_request",
    )
    assert_problem(
        await client.post("/v1/wallet/balance_transfer", content=b"[1, 2]", headers=headers), 400, "malformed_request"
    )
    assert_problem(
        await client.post("/v1/wallet/balance_transfer", content=b"\xff\xfe", headers=headers), 400, "malformed_request"
    )
    big = b'{"owner": "' + b"x" * (BODY_BYTES_MAX + 1) + b'"}'
    assert_problem(await client.post("/v1/accounts", content=big, headers=headers), 400, "malformed_request")
    assert_problem(await client.get("/v1/nowhere"), 404, "not_found")
    assert_problem(await client.delete("/v1/accounts/x"), 405, "method_not_allowed")
    assert_problem(await client.get("/v1/accounts/has%20space"), 422, "validation_error")
    assert_problem(await client.get(f"/v1/transfers/{uuid.uuid4()}"), 404, "transfer_not_found")
    assert_problem(await client.get("/v1/transfers/nope"), 422, "validation_error")
    assert_problem(
        await client.post("/v1/accounts", json={"account_id": "x1", "owner": "", "currency": "USD"}),
        422,
        "validation_error",
    )
    assert_problem(
        await client.post("/v1/accounts", json={"account_id": "x1", "owner": "o", "currency": "usd"}),
        422,
        "unsupported_currency",
    )
    assert_problem(
        await client.post(
            "/v1/accounts/nobody-y/deposits",
            json={"amount": "1.00", "currency": "USD", "transaction_id": str(uuid.uuid4())},
        ),
        404,
        "account_not_found",
    )
    assert (await client.get("/healthz")).json() == {"status": "ok"}


async def test_deposit_precision_follows_the_currency(client: httpx.AsyncClient, topology: Topology) -> None:
    """JPY has no decimals, BHD three: amounts are read and shown in each currency's precision."""
    yen, dinar = accounts_on(topology, "shard3", 2)
    await create(client, yen, currency="JPY")
    await create(client, dinar, currency="BHD")
    assert_problem(
        await client.post(
            f"/v1/accounts/{yen}/deposits",
            json={"amount": "1.5", "currency": "JPY", "transaction_id": str(uuid.uuid4())},
        ),
        422,
        "invalid_amount",
    )
    assert_problem(
        await client.post(
            f"/v1/accounts/{yen}/deposits",
            json={"amount": "1.50", "currency": "USD", "transaction_id": str(uuid.uuid4())},
        ),
        409,
        "currency_mismatch",
    )
    await client.post(
        f"/v1/accounts/{yen}/deposits", json={"amount": "1500", "currency": "JPY", "transaction_id": str(uuid.uuid4())}
    )
    await client.post(
        f"/v1/accounts/{dinar}/deposits",
        json={"amount": "1.234", "currency": "BHD", "transaction_id": str(uuid.uuid4())},
    )
    assert (await client.get(f"/v1/accounts/{yen}")).json()["balance"] == "1500"
    assert (await client.get(f"/v1/accounts/{dinar}")).json()["balance"] == "1.234"


async def test_pending_transfer_shows_preparing(
    client: httpx.AsyncClient, service: WalletService, topology: Topology
) -> None:
    """While a transfer's batch is still open, GET says pending/preparing rather than not found."""
    import asyncio

    alice, bob = accounts_on(topology, "shard0", 2)
    await create(client, alice, deposit="5.00")
    await create(client, bob)
    key = str(uuid.uuid4())
    with batches_held(service, "shard0") as release:
        body: dict[str, object] = {
            "from_account": alice,
            "to_account": bob,
            "amount": "1.00",
            "currency": "USD",
            "transaction_id": key,
        }
        sending = asyncio.create_task(client.post("/v1/wallet/balance_transfer", json=body))
        while not service.in_flight(key):
            await asyncio.sleep(0.01)
        pending = await client.get(f"/v1/transfers/{key}")
        assert pending.status_code == 202 and pending.json()["phase"] == "preparing"
        release.set()
        assert (await sending).status_code == 200
    assert (await client.get(f"/v1/transfers/{key}")).json()["phase"] == "committed"


async def test_batch_endpoint_results_per_item(client: httpx.AsyncClient, topology: Topology) -> None:
    """POST /v1/transfers:batch: every item gets its own result; bad items fail alone."""
    alice, bob = accounts_on(topology, "shard1", 2)
    (carol,) = accounts_on(topology, "shard2", 1)
    await create(client, alice, deposit="10.00")
    await create(client, bob)
    await create(client, carol)

    def item(**changes: object) -> dict[str, object]:
        body: dict[str, object] = {
            "from_account": alice,
            "to_account": bob,
            "amount": "1.00",
            "currency": "USD",
            "transaction_id": str(uuid.uuid4()),
        }
        body.update(changes)
        return body

    items: list[object] = [
        item(),
        item(to_account=carol, mode="tcc"),
        item(amount="100.00"),
        item(amount="x"),
        "nope",
        item(extra=1),
        item(to_account=carol, mode="saga"),
    ]
    items[-2] = {k: v for k, v in item().items() if k != "currency"}
    response = await client.post("/v1/transfers:batch", json={"transfers": items})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["status"] for r in results] == ["success", "success", "failed", "failed", "failed", "failed", "success"]
    assert [r.get("code") for r in results[2:6]] == [
        "insufficient_funds",
        "invalid_amount",
        "validation_error",
        "validation_error",
    ]
    assert (await client.get(f"/v1/accounts/{alice}")).json()["balance"] == "7.00"
    bad_bodies: list[dict[str, object]] = [{"transfers": []}, {"transfers": [item()] * 1001}, {"transfers": "x"}, {}]
    for bad in bad_bodies:
        response = await client.post("/v1/transfers:batch", json=bad)
        assert response.status_code in (400, 422) and response.json()["code"] in (
            "validation_error",
            "malformed_request",
        )


async def test_http_conventions(client: httpx.AsyncClient, topology: Topology) -> None:
    """Protects what HTTP clients and caches rely on: 405 names the methods a path takes,
    a created account says where it lives, an unchanged account is a 304, and a problem's
    type resolves to what its code means."""
    refused = await client.delete("/v1/accounts/x")
    assert_problem(refused, 405, "method_not_allowed")
    assert refused.headers["Allow"] == "GET"
    assert (await client.put("/v1/wallet/balance_transfer", json={})).headers["Allow"] == "POST"

    (account_id,) = accounts_on(topology, "shard1", 1)
    created = await client.post("/v1/accounts", json={"account_id": account_id, "owner": "o", "currency": "EUR"})
    assert created.status_code == 201 and created.headers["Location"] == f"/v1/accounts/{account_id}"
    again = await client.post("/v1/accounts", json={"account_id": account_id, "owner": "o", "currency": "EUR"})
    assert again.status_code == 200 and "Location" not in again.headers

    first = await client.get(f"/v1/accounts/{account_id}")
    tag = first.headers["ETag"]
    unchanged = await client.get(f"/v1/accounts/{account_id}", headers={"If-None-Match": tag})
    assert unchanged.status_code == 304 and not unchanged.content and unchanged.headers["ETag"] == tag
    await client.post(
        f"/v1/accounts/{account_id}/deposits",
        json={"amount": "1.00", "currency": "EUR", "transaction_id": str(uuid.uuid4())},
    )
    changed = await client.get(f"/v1/accounts/{account_id}", headers={"If-None-Match": tag})
    assert changed.status_code == 200 and changed.headers["ETag"] != tag and changed.json()["balance"] == "1.00"

    problem = (await client.get(f"/v1/accounts/{account_id}x/balance")).json()  # no `at`: a validation error
    meaning = await client.get(problem["type"], headers={"Authorization": ""})
    assert meaning.status_code == 200 and meaning.json()["code"] == problem["code"] == "validation_error"
    assert meaning.json()["status"] == 422 and meaning.json()["meaning"]
    assert_problem(await client.get("/problems/no_such_code"), 404, "not_found")


async def test_every_code_has_a_problem_page(client: httpx.AsyncClient) -> None:
    from core.domain.errors import ERROR_MEANINGS, ERROR_STATUS

    for code in ERROR_MEANINGS:
        page = (await client.get(f"/problems/{code}")).json()
        assert page["code"] == code and page["meaning"], code
        if code in ERROR_STATUS:
            assert page["status"] == ERROR_STATUS[code]
