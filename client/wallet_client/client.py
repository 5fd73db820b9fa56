"""WalletClient: one typed method per operation of the wallet API (its OpenAPI operationIds,
in snake_case), over httpx.

Money never moves twice: every deposit and transfer carries a transaction id (a new UUID
unless the caller gives one), and an attempt whose outcome is unknown (a 5xx, a timeout, a
reset connection, a 429) is retried with the same id and the same body, a bounded number of
times (tenacity), honouring Retry-After. The first definite answer ends it: the recorded
transfer, or the ApiError of a refusal. Past the budget: UnknownOutcome, naming the id, which
`get_transfer` or `wait_final` resolve later.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    wait_random_exponential,
)
from tenacity.stop import stop_base

from wallet_client.models import (
    Account,
    BalanceAt,
    BatchResult,
    Event,
    History,
    HistoryItem,
    Pending,
    ProblemType,
    Ready,
    Transfer,
    build,
)

REQUEST_TIMEOUT_S = 15.0
CONNECTIONS_MAX = 64
LONG_POLL_S_MAX = 30  # the API's ?wait= bound
READY_POLL_S = 0.2
Headers = Callable[[], dict[str, str]]


class ApiError(Exception):
    """A definite answer that is not a success: the problem the API sent (RFC 9457)."""

    def __init__(self, status: int, code: str, detail: str, transaction_id: str | None = None) -> None:
        super().__init__(f"{status} {code}: {detail}")
        self.status, self.code, self.detail, self.transaction_id = status, code, detail, transaction_id


class UnknownOutcome(Exception):
    """No definite answer within the retry budget: the money may or may not have moved. Ask
    again with the same transaction id (get_transfer, wait_final, or the same call)."""

    def __init__(self, transaction_id: str | None, reason: str) -> None:
        super().__init__(f"outcome of {transaction_id} unknown: {reason}")
        self.transaction_id, self.reason = transaction_id, reason


@dataclass(frozen=True)
class Attempt:
    """One try of a call: its HTTP status (None: no answer came) and the problem code or the
    transport error's name."""

    status: int | None
    code: str | None
    elapsed_s: float

    @property
    def definite(self) -> bool:
        return self.status is not None and is_definite(self.status)


@dataclass(frozen=True)
class RetryPolicy:
    attempts_max: int = 8
    deadline_s: float = 60.0
    wait_s_max: float = 2.0
    give_up: Callable[[], bool] | None = None  # stop early (a caller shutting down), after the attempt

    def __post_init__(self) -> None:
        if self.attempts_max < 1 or self.deadline_s <= 0 or self.wait_s_max < 0:
            raise ValueError("a retry policy needs attempts_max >= 1, deadline_s > 0 and wait_s_max >= 0")


NO_RETRY = RetryPolicy(attempts_max=1)


def is_definite(status: int) -> bool:
    """2xx and 3xx, and 4xx but 429, and 501: the service committed to this answer."""
    return status < 400 or (status < 500 and status != 429) or status == 501


class _Unknown(Exception):
    def __init__(self, reason: str, retry_after_s: float = 0.0) -> None:
        super().__init__(reason)
        self.reason, self.retry_after_s = reason, retry_after_s


class _GiveUp(stop_base):
    def __init__(self, give_up: Callable[[], bool] | None) -> None:
        self.give_up = give_up

    def __call__(self, retry_state: RetryCallState) -> bool:
        return self.give_up is not None and self.give_up()


class WalletClient:
    def __init__(
        self,
        base_url: str | list[str],
        token: str | None = None,
        headers: Headers | None = None,
        timeout_s: float = REQUEST_TIMEOUT_S,
        retry: RetryPolicy = RetryPolicy(),
        seed: int | str = 0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        """`base_url`: one coordinator, or several (each call starts at one picked at random,
        seeded, and each retry moves to the next). `token`: a bearer token; or `headers`,
        called for every request."""
        self.urls = [base_url] if isinstance(base_url, str) else list(base_url)
        if not self.urls:
            raise ValueError("WalletClient needs at least one base URL")
        self.headers = headers or ((lambda: {"Authorization": f"Bearer {token}"}) if token else (lambda: {}))
        self.retry = retry
        self.rng = random.Random(seed)
        self.http = httpx.AsyncClient(
            timeout=timeout_s,
            transport=transport,
            limits=httpx.Limits(max_connections=CONNECTIONS_MAX, max_keepalive_connections=16),
        )

    async def close(self) -> None:
        await self.http.aclose()

    async def __aenter__(self) -> WalletClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- one request ------------------------------------------------------------------------
    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        url_index: int = 0,
    ) -> httpx.Response:
        url = self.urls[url_index % len(self.urls)] + path
        return await self.http.request(
            method, url, json=body, params=params, headers={**self.headers(), **(headers or {})}
        )

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        params: dict[str, Any] | None = None,
        transaction_id: str | None = None,
        retry: RetryPolicy | None = None,
        on_attempt: Callable[[Attempt], None] | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """The first definite answer (raising ApiError if it is a refusal), retrying unknown
        ones with the same request."""
        policy = retry or self.retry
        started = time.monotonic()
        first_url = self.rng.randrange(len(self.urls))
        tries = 0

        async def attempt() -> httpx.Response:
            nonlocal tries
            tries += 1
            try:
                response = await self.request(method, path, body, params, headers, first_url + tries - 1)
            except httpx.TimeoutException as error:
                self._tell(on_attempt, Attempt(None, "timeout", time.monotonic() - started))
                raise _Unknown(f"timeout: {error!r}") from error
            except httpx.TransportError as error:  # refused, reset: the coordinator may have died mid-request
                self._tell(on_attempt, Attempt(None, type(error).__name__, time.monotonic() - started))
                raise _Unknown(f"{type(error).__name__}: {error!r}") from error
            code = problem_code(response)
            self._tell(on_attempt, Attempt(response.status_code, code, time.monotonic() - started))
            if not is_definite(response.status_code):
                raise _Unknown(f"{response.status_code} {code}", retry_after(response))
            return response

        try:
            async for trying in AsyncRetrying(
                stop=stop_after_attempt(policy.attempts_max)
                | stop_after_delay(policy.deadline_s)
                | _GiveUp(policy.give_up),
                wait=self._wait(policy),
                retry=retry_if_exception_type(_Unknown),
                reraise=True,
            ):
                with trying:
                    response = await attempt()
        except _Unknown as unknown:
            raise UnknownOutcome(transaction_id, unknown.reason) from None
        if response.status_code >= 400:
            raise api_error(response, transaction_id)
        return response

    @staticmethod
    def _wait(policy: RetryPolicy) -> Callable[[RetryCallState], float]:
        jitter = wait_random_exponential(multiplier=0.05, max=policy.wait_s_max)

        def wait(state: RetryCallState) -> float:
            error = state.outcome.exception() if state.outcome else None
            asked = error.retry_after_s if isinstance(error, _Unknown) else 0.0
            return max(jitter(state), min(asked, policy.deadline_s))

        return wait

    @staticmethod
    def _tell(on_attempt: Callable[[Attempt], None] | None, attempt: Attempt) -> None:
        if on_attempt is not None:
            on_attempt(attempt)

    # -- accounts ---------------------------------------------------------------------------
    async def create_account(self, account_id: str, owner: str, currency: str) -> tuple[Account, bool]:
        """(the account, True if this call created it). The same again is a no-op."""
        response = await self.call(
            "POST", "/v1/accounts", {"account_id": account_id, "owner": owner, "currency": currency}
        )
        return build(Account, response.json()), response.status_code == 201

    async def get_account(self, account_id: str, if_none_match: str | None = None) -> Account | None:
        """The account, or None when `if_none_match` names its current ETag (unchanged)."""
        response = await self.call(
            "GET", f"/v1/accounts/{account_id}", headers={"If-None-Match": if_none_match} if if_none_match else None
        )
        if response.status_code == 304:
            return None
        return build(Account, {**response.json(), "etag": response.headers.get("ETag")})

    async def get_balance_at(self, account_id: str, at: str) -> BalanceAt:
        """The balance at an RFC 3339 moment, rebuilt from the ledger."""
        return build(
            BalanceAt, (await self.call("GET", f"/v1/accounts/{account_id}/balance", params={"at": at})).json()
        )

    async def get_history(self, account_id: str, after_version: int = 0, limit: int = 100) -> History:
        body = (
            await self.call(
                "GET",
                f"/v1/accounts/{account_id}/transactions",
                params={"after_version": after_version, "limit": limit},
            )
        ).json()
        return History(
            body["account_id"], [build(HistoryItem, item) for item in body["items"]], body["next_after_version"]
        )

    # -- money ------------------------------------------------------------------------------
    async def deposit(
        self,
        account_id: str,
        amount: str,
        currency: str,
        transaction_id: str | None = None,
        retry: RetryPolicy | None = None,
        on_attempt: Callable[[Attempt], None] | None = None,
    ) -> Transfer:
        """Money enters from outside (admin). Retried with the same id until definite."""
        transaction_id = transaction_id or str(uuid.uuid4())
        body = {"amount": amount, "currency": currency, "transaction_id": transaction_id}
        response = await self.call(
            "POST",
            f"/v1/accounts/{account_id}/deposits",
            body,
            transaction_id=transaction_id,
            retry=retry,
            on_attempt=on_attempt,
        )
        return build(Transfer, response.json())

    async def transfer(
        self,
        from_account: str,
        to_account: str,
        amount: str,
        currency: str,
        transaction_id: str | None = None,
        mode: str | None = None,
        retry: RetryPolicy | None = None,
        on_attempt: Callable[[Attempt], None] | None = None,
    ) -> Transfer:
        """Move money out of `from_account`. Retried with the same id until definite: the
        recorded transfer, or ApiError for a refusal (insufficient_funds, ...)."""
        transaction_id = transaction_id or str(uuid.uuid4())
        body: dict[str, Any] = {
            "from_account": from_account,
            "to_account": to_account,
            "amount": amount,
            "currency": currency,
            "transaction_id": transaction_id,
        }
        if mode is not None:
            body["mode"] = mode
        response = await self.call(
            "POST",
            "/v1/wallet/balance_transfer",
            body,
            transaction_id=transaction_id,
            retry=retry,
            on_attempt=on_attempt,
        )
        return build(Transfer, response.json())

    async def transfer_batch(
        self, transfers: list[dict[str, Any]], retry: RetryPolicy | None = None
    ) -> list[BatchResult]:
        """Up to 1,000 transfers, each with its own answer. Every item needs its transaction_id
        (one is added where missing), so retrying the whole batch applies none twice."""
        items = [{**item, "transaction_id": item.get("transaction_id") or str(uuid.uuid4())} for item in transfers]
        response = await self.call("POST", "/v1/transfers:batch", {"transfers": items}, retry=retry)
        return [build(BatchResult, result) for result in response.json()["results"]]

    async def get_transfer(self, transaction_id: str, wait_s: int = 0) -> Transfer | Pending:
        """The recorded outcome, or the phase while pending (`wait_s`: the long poll, 0..30)."""
        response = await self.call(
            "GET",
            f"/v1/transfers/{transaction_id}",
            params={"wait": wait_s} if wait_s else None,
            transaction_id=transaction_id,
        )
        body = response.json()
        return build(Pending, body) if response.status_code == 202 else build(Transfer, body)

    async def wait_final(self, transaction_id: str, timeout_s: float = 60.0) -> Transfer:
        """Wait on the push endpoint (long polls of up to 30 s) until the transfer is final."""
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            found = await self.get_transfer(transaction_id, wait_s=max(0, min(LONG_POLL_S_MAX, int(left))))
            if isinstance(found, Transfer):
                return found
            if time.monotonic() >= deadline:
                raise UnknownOutcome(transaction_id, f"still {found.phase} after {timeout_s:.0f} s")

    async def transfer_events(self, transaction_id: str) -> AsyncIterator[Event]:
        """The server-sent events of a transfer: `phase` while pending, then `final`."""
        url = self.urls[self.rng.randrange(len(self.urls))] + f"/v1/transfers/{transaction_id}/events"
        async with self.http.stream("GET", url, headers=self.headers()) as response:
            if response.status_code >= 400:
                await response.aread()
                raise api_error(response, transaction_id)
            event = ""
            async for line in response.aiter_lines():
                if line.startswith("event: "):
                    event = line[len("event: ") :]
                elif line.startswith("data: ") and event:
                    yield Event(event, json.loads(line[len("data: ") :]))
                    event = ""

    # -- the service itself -----------------------------------------------------------------
    async def health(self) -> str:
        return str((await self.call("GET", "/healthz")).json()["status"])

    async def ready(self) -> Ready:
        return build(Ready, (await self.call("GET", "/readyz", retry=NO_RETRY)).json())

    async def wait_ready(self, timeout_s: float = 60.0) -> Ready:
        """Until /readyz answers 200 (a starting coordinator), or UnknownOutcome."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                return await self.ready()
            except (ApiError, UnknownOutcome) as error:
                if time.monotonic() >= deadline:
                    raise UnknownOutcome(None, f"not ready after {timeout_s:.0f} s: {error}") from None
            await asyncio.sleep(READY_POLL_S)

    async def metrics(self) -> str:
        return (await self.call("GET", "/metrics")).text

    async def problem_type(self, code: str) -> ProblemType:
        return build(ProblemType, (await self.call("GET", f"/problems/{code}")).json())


def problem_code(response: httpx.Response) -> str | None:
    if response.status_code < 400:
        return None
    try:
        body = response.json()
    except ValueError:
        return f"http_{response.status_code}"
    return str(body.get("code") or f"http_{response.status_code}") if isinstance(body, dict) else None


def retry_after(response: httpx.Response) -> float:
    raw = response.headers.get("Retry-After", "")
    return float(raw) if raw.isdigit() else 0.0


def api_error(response: httpx.Response, transaction_id: str | None) -> ApiError:
    try:
        body = response.json()
    except ValueError:
        body = {}
    body = body if isinstance(body, dict) else {}
    return ApiError(
        response.status_code,
        str(body.get("code") or f"http_{response.status_code}"),
        str(body.get("detail") or response.text[:200]),
        response.headers.get("Wallet-Transaction-Id") or transaction_id,
    )
