"""Who may call what: every 401 (no token, bad token), 403 (wrong scope, someone else's
account) and 429 (rate limit) path, over the real app on real shards."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace

import httpx
import jwt
import pytest

from coordinator.api.app import WalletApp, build_app
from coordinator.api.auth import ISSUER, issue_token
from coordinator.service.wallet import WalletService
from core.runtime.settings import Settings
from shard_router.topology import Topology
from tests.helpers import BACKENDS, TEST_SECRET, accounts_on, app_over, assert_problem, bearer

PROTECTED: list[
    tuple[str, str, dict[str, object] | None]
] = [  # (method, path template, body or None): every route but health
    ("GET", "/v1/accounts/{a}", None),
    ("POST", "/v1/accounts", {"account_id": "x", "owner": "x", "currency": "USD"}),
    ("POST", "/v1/accounts/{a}/deposits", {"amount": "1.00", "currency": "USD", "transaction_id": "{t}"}),
    ("GET", "/v1/accounts/{a}/balance?at=2026-01-01T00:00:00Z", None),
    ("GET", "/v1/accounts/{a}/transactions", None),
    (
        "POST",
        "/v1/wallet/balance_transfer",
        {"from_account": "{a}", "to_account": "{b}", "amount": "1.00", "currency": "USD", "transaction_id": "{t}"},
    ),
    ("POST", "/v1/transfers:batch", {"transfers": []}),
    ("GET", "/v1/transfers/{t}", None),
    ("GET", "/v1/transfers/{t}/events", None),
    ("GET", "/metrics", None),
]


def fill(value: object, names: dict[str, str]) -> object:
    if isinstance(value, str):
        return value.format(**names)
    if isinstance(value, dict):
        return {k: fill(v, names) for k, v in value.items()}
    return value


def client_for(app: WalletApp) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://wallet.test")


@pytest.fixture(params=BACKENDS)
async def http(
    request: pytest.FixtureRequest, service: WalletService, settings: Settings
) -> AsyncIterator[httpx.AsyncClient]:
    async with app_over(request.param, settings, service) as app, client_for(app) as client:
        yield client


async def open_account(http: httpx.AsyncClient, account_id: str, owner: str, deposit: str | None = None) -> None:
    created = await http.post(
        "/v1/accounts", json={"account_id": account_id, "owner": owner, "currency": "USD"}, headers=bearer()
    )
    assert created.status_code == 201, created.text
    if deposit:
        response = await http.post(
            f"/v1/accounts/{account_id}/deposits",
            headers=bearer(),
            json={"amount": deposit, "currency": "USD", "transaction_id": str(uuid.uuid4())},
        )
        assert response.status_code == 200, response.text


def expired_token() -> str:
    past = int(time.time()) - 3600
    return jwt.encode(
        {"sub": "admin", "scope": "admin", "iat": past - 60, "exp": past, "iss": ISSUER}, TEST_SECRET, algorithm="HS256"
    )


BAD_AUTHORIZATIONS = {
    "no header": None,
    "not bearer": "Basic YWRtaW46YWRtaW4=",
    "empty bearer": "Bearer ",
    "garbage": "Bearer not.a.token",
    "other secret": "Bearer " + issue_token("another-secret-that-is-long-enough-0123456789", "admin", "admin"),
    "expired": "Bearer " + expired_token(),
    "no scope": "Bearer "
    + jwt.encode(
        {"sub": "a", "iat": int(time.time()), "exp": int(time.time()) + 60, "iss": ISSUER},
        TEST_SECRET,
        algorithm="HS256",
    ),
    "unknown scope": "Bearer "
    + jwt.encode(
        {"sub": "a", "scope": "root", "iat": int(time.time()), "exp": int(time.time()) + 60, "iss": ISSUER},
        TEST_SECRET,
        algorithm="HS256",
    ),
    "alg none": "Bearer "
    + jwt.encode(
        {"sub": "admin", "scope": "admin", "iat": int(time.time()), "exp": int(time.time()) + 60, "iss": ISSUER},
        "",
        algorithm="none",
    ),
}


async def test_every_endpoint_but_health_needs_a_valid_token(http: httpx.AsyncClient, topology: Topology) -> None:
    """No token, or a bad one (wrong secret, expired, unsigned, no or unknown scope) -> 401 everywhere
    but the probes, the OpenAPI document and the problem pages."""
    names = {"a": "alice-1", "b": "bob-1", "t": str(uuid.uuid4())}
    for method, template, body in PROTECTED:
        for why, authorization in BAD_AUTHORIZATIONS.items():
            headers = {"Authorization": authorization} if authorization else {}
            response = await http.request(method, str(fill(template, names)), json=fill(body, names), headers=headers)
            assert response.status_code == 401, (method, template, why, response.text)
            assert_problem(response, 401, "unauthorized")
            assert response.headers["www-authenticate"].startswith("Bearer")
    assert (await http.get("/healthz")).status_code == 200
    assert (await http.get("/readyz")).status_code == 200
    # The contract and what its problem codes mean are public: a client reads them before it has a token.
    assert (await http.get("/openapi.json")).status_code == 200
    assert (await http.get("/problems/insufficient_funds")).json()["status"] == 409


async def test_user_tokens_act_only_on_their_own_accounts(http: httpx.AsyncClient, topology: Topology) -> None:
    """A user moves money only out of accounts it owns and reads only its own accounts and
    transfers; someone else's account and no account answer alike."""
    (alice_account,) = accounts_on(topology, "shard0", 1)
    (bob_account,) = accounts_on(topology, "shard1", 1)
    (ghost,) = accounts_on(topology, "shard2", 1, prefix="ghost")
    await open_account(http, alice_account, "alice", deposit="10.00")
    await open_account(http, bob_account, "bob", deposit="10.00")
    alice, bob = bearer("alice", admin=False), bearer("bob", admin=False)

    def transfer(source: str, target: str, key: str | None = None) -> dict[str, object]:
        return {
            "from_account": source,
            "to_account": target,
            "amount": "1.00",
            "currency": "USD",
            "transaction_id": key or str(uuid.uuid4()),
        }

    # Alice pays Bob out of her own account: allowed, across shards.
    key = str(uuid.uuid4())
    paid = await http.post("/v1/wallet/balance_transfer", json=transfer(alice_account, bob_account, key), headers=alice)
    assert paid.status_code == 200, paid.text
    # Alice moving money out of Bob's account: 403, and nothing moved.
    stolen = await http.post("/v1/wallet/balance_transfer", json=transfer(bob_account, alice_account), headers=alice)
    assert_problem(stolen, 403, "forbidden")
    batch = await http.post(
        "/v1/transfers:batch",
        headers=alice,
        json={
            "transfers": [
                transfer(alice_account, bob_account),
                transfer(bob_account, alice_account),
                transfer(ghost, alice_account),
            ]
        },
    )
    assert [r.get("code", r["status"]) for r in batch.json()["results"]] == ["success", "forbidden", "forbidden"]
    assert (await http.get(f"/v1/accounts/{bob_account}", headers=bob)).json()["balance"] == "12.00"

    # Reads: own account yes; Bob's and a missing one get the same 403.
    assert (await http.get(f"/v1/accounts/{alice_account}", headers=alice)).json()["balance"] == "8.00"
    for other in (bob_account, ghost):
        for path in (
            f"/v1/accounts/{other}",
            f"/v1/accounts/{other}/transactions",
            f"/v1/accounts/{other}/balance?at=2026-01-01T00:00:00Z",
        ):
            response = await http.get(path, headers=alice)
            assert_problem(response, 403, "forbidden")
            assert response.json()["detail"] == f"this token may not read account {other}"
    missing_source = await http.post("/v1/wallet/balance_transfer", json=transfer(ghost, bob_account), headers=alice)
    assert missing_source.json()["detail"] == stolen.json()["detail"].replace(bob_account, ghost)

    # Transfers: both parties see it; a third user gets the same 404 as for an unknown id.
    assert (await http.get(f"/v1/transfers/{key}", headers=alice)).status_code == 200
    assert (await http.get(f"/v1/transfers/{key}", headers=bob)).status_code == 200
    mallory = bearer("mallory", admin=False)
    assert_problem(await http.get(f"/v1/transfers/{key}", headers=mallory), 404, "transfer_not_found")
    assert_problem(await http.get(f"/v1/transfers/{key}/events", headers=mallory), 404, "transfer_not_found")
    assert_problem(await http.get(f"/v1/transfers/{uuid.uuid4()}", headers=mallory), 404, "transfer_not_found")


async def test_admin_only_operations(http: httpx.AsyncClient, topology: Topology) -> None:
    """Opening accounts, deposits and metrics need the admin scope: a user gets 403."""
    (mine,) = accounts_on(topology, "shard3", 1)
    await open_account(http, mine, "carol")
    carol = bearer("carol", admin=False)
    response = await http.post(
        "/v1/accounts", json={"account_id": f"{mine}-2", "owner": "carol", "currency": "USD"}, headers=carol
    )
    assert_problem(response, 403, "forbidden")
    response = await http.post(
        f"/v1/accounts/{mine}/deposits",
        headers=carol,
        json={"amount": "5.00", "currency": "USD", "transaction_id": str(uuid.uuid4())},
    )
    assert_problem(response, 403, "forbidden")
    assert_problem(await http.get("/metrics", headers=carol), 403, "forbidden")
    assert (await http.get(f"/v1/accounts/{mine}", headers=carol)).json()["balance"] == "0.00"
    assert (await http.get("/openapi.json", headers=carol)).status_code == 200


@pytest.mark.parametrize("backend", BACKENDS)
async def test_rate_limit_per_token(service: WalletService, settings: Settings, backend: str) -> None:
    """Past its burst a token gets 429 with Retry-After, before anything else is checked (a
    bad body too); another token is not affected. Over the engine link the buckets are the
    engine's, one for every HTTP process."""
    limited = replace(settings, rate_per_s=1, rate_burst=3, admin_rate_per_s=1, admin_rate_burst=2)
    async with app_over(backend, limited, service) as app, client_for(app) as http:
        first, second = bearer("dave", admin=False), bearer("erin", admin=False)
        path = f"/v1/transfers/{uuid.uuid4()}"
        answers = [(await http.get(path, headers=first)).status_code for _ in range(4)]
        assert answers == [404, 404, 404, 429]
        limited_response = await http.get(path, headers=first)
        assert_problem(limited_response, 429, "rate_limited")
        assert int(limited_response.headers["retry-after"]) >= 1
        refused = await http.post("/v1/wallet/balance_transfer", headers=first, content=b"not json")
        assert_problem(refused, 429, "rate_limited")
        assert (await http.get(path, headers=second)).status_code == 404
        admin = bearer()
        assert [(await http.get(path, headers=admin)).status_code for _ in range(3)] == [404, 404, 429]
        assert (await http.get("/healthz")).status_code == 200  # health is never limited


async def test_asymmetric_tokens(service: WalletService, settings: Settings) -> None:
    """With a public key configured, RS256 tokens from the private key's holder pass and
    HS256 tokens are refused (no algorithm confusion)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    async with client_for(build_app(replace(settings, auth_public_key=public), service=service)) as http:
        good = issue_token(private, "admin", "admin", algorithm="RS256")
        path = f"/v1/transfers/{uuid.uuid4()}"
        assert (await http.get(path, headers={"Authorization": f"Bearer {good}"})).status_code == 404
        assert (await http.get(path, headers=bearer())).status_code == 401
        confused = jwt.encode(
            {"sub": "admin", "scope": "admin", "iat": int(time.time()), "exp": int(time.time()) + 60, "iss": ISSUER},
            "x" * 64,
            algorithm="HS256",
        )
        assert (await http.get(path, headers={"Authorization": f"Bearer {confused}"})).status_code == 401


def test_a_remembered_token_still_expires(monkeypatch: pytest.MonkeyPatch) -> None:
    """Protects expiry under the verified-token cache: a token accepted once is refused once
    its expiry (plus the clock leeway) has passed, without a new signature check."""
    import time as clock

    from coordinator.api.auth import CLOCK_LEEWAY_S, TokenVerifier, issue_token
    from core.domain.errors import WalletError

    verifier = TokenVerifier(TEST_SECRET)
    token = issue_token(TEST_SECRET, "alice", "user", ttl_s=60)
    assert verifier.verify(f"Bearer {token}").owner == "alice"
    assert verifier.verify(f"Bearer {token}").owner == "alice"  # from the cache
    later = clock.time() + 60 + CLOCK_LEEWAY_S + 1
    monkeypatch.setattr(clock, "time", lambda: later)
    with pytest.raises(WalletError) as refused:
        verifier.verify(f"Bearer {token}")
    assert refused.value.code == "unauthorized"
