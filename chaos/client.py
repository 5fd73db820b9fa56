"""The REST client of the bank workload: any number of coordinators, optional headers.

Headers come from a callback called for every request, so a caller can mint a fresh
bearer token (`Authorization: Bearer ...`) when the API requires one.
"""
from __future__ import annotations

import random
import time
from typing import Any, Callable

import httpx

from chaos.history import FAILED, SUCCESS, UNKNOWN, Answer

REQUEST_TIMEOUT_S = 15.0  # past lock_timeout (5 s) and a paused shard's pool timeout (5 s)
CONNECTIONS_MAX = 64
# Recorded business refusals: a definite "not applied" that every retry repeats.
DEFINITE_FAILURES = frozenset({"insufficient_funds", "account_not_found", "account_frozen", "currency_mismatch",
                               "transfer_aborted", "idempotency_conflict", "same_account", "invalid_amount",
                               "validation_error"})

Headers = Callable[[], dict[str, str]]


class RestClient:
    def __init__(self, urls: list[str], headers: Headers | None = None, seed: int | str = 0,
                 timeout_s: float = REQUEST_TIMEOUT_S) -> None:
        assert urls, "RestClient needs at least one coordinator URL"
        self.urls = list(urls)
        self.headers = headers or (lambda: {})
        self.rng = random.Random(seed)
        self.started = time.monotonic()
        self.client = httpx.AsyncClient(timeout=timeout_s,
                                        limits=httpx.Limits(max_connections=CONNECTIONS_MAX, max_keepalive_connections=16))

    async def close(self) -> None:
        await self.client.aclose()

    def now_s(self) -> float:
        return time.monotonic() - self.started

    def pick(self) -> str:
        return self.rng.choice(self.urls)

    async def call(self, method: str, path: str, body: dict[str, Any] | None = None,
                   url: str | None = None) -> tuple[int, dict[str, Any]]:
        """(status, JSON body); raises httpx.HTTPError when no HTTP answer came."""
        response = await self.client.request(method, (url or self.pick()) + path, json=body, headers=self.headers())
        try:
            document = response.json()
        except ValueError:
            document = {"code": "not_json", "detail": response.text[:200]}
        return response.status_code, document if isinstance(document, dict) else {"body": document}

    async def transfer(self, body: dict[str, str]) -> Answer:
        return await self._money("POST", "/v1/wallet/balance_transfer", body)

    async def deposit(self, account_id: str, body: dict[str, str]) -> Answer:
        return await self._money("POST", f"/v1/accounts/{account_id}/deposits", body)

    async def create_account(self, account_id: str, currency: str) -> None:
        status, document = await self.call("POST", "/v1/accounts",
                                           {"account_id": account_id, "owner": account_id, "currency": currency})
        assert status in (200, 201), f"cannot create {account_id}: {status} {document}"

    async def _money(self, method: str, path: str, body: dict[str, str]) -> Answer:
        try:
            status, document = await self.call(method, path, body)
        except httpx.TimeoutException:
            return Answer(UNKNOWN, "timeout", self.now_s())
        except httpx.HTTPError as error:  # refused, reset: the coordinator may have died mid-request
            return Answer(UNKNOWN, type(error).__name__, self.now_s())
        return answer_of(status, document, self.now_s())


def answer_of(status: int, document: dict[str, Any], at_s: float) -> Answer:
    if status == 200 and document.get("status") == SUCCESS:
        return Answer(SUCCESS, None, at_s)
    code = str(document.get("code") or document.get("error_code") or f"http_{status}")
    if status in (409, 404, 422) and code in DEFINITE_FAILURES:
        return Answer(FAILED, code, at_s)
    return Answer(UNKNOWN, code, at_s)  # 503 shard_unavailable, 500, anything unexpected
