"""The two money routes, one transfer and one deposit, as plain ASGI.

They are nearly every request the service serves, so they skip what the other routes go
through: starlette's request object, its middleware, its scan of the route table, a
response object. Everything a client sees is the same as on every other route (the token
checked (401), its rate limit spent (429), the owner checked (403), problem+json with the
stable codes, metrics), and the same code serves them when starlette routes to them.

`MoneyRoutes` sits in front of the app: a POST to either path is answered here, anything
else goes on to starlette (which answers 405 for another method on these paths).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from starlette.datastructures import State
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from coordinator.api import schemas
from coordinator.api.access import owner_of
from coordinator.api.auth import Principal
from coordinator.api.backend import Backend
from coordinator.api.bodies import BODY_BYTES_MAX, decode
from coordinator.api.problems import PROBLEM_MEDIA, problem_body, problem_headers, shard_error_detail
from coordinator.api.views import JSON, transfer_view
from core.domain.errors import WalletError
from core.domain.transfers import Mode, Transfer, TransferResult
from core.domain.validation import check_account_id, deposit_request, transfer_request
from core.runtime import logs
from shards.errors import ShardError

log = logging.getLogger("wallet.api")

TRANSFER_PATH = "/v1/wallet/balance_transfer"
DEPOSIT_PATH = "/v1/accounts/{account_id}/deposits"
_DEPOSIT_PREFIX, _DEPOSIT_SUFFIX = "/v1/accounts/", "/deposits"
MODES_SEEN = ("local", "2pc", "tcc", "saga")  # label values of wallet_transfers_total{mode}
_AUTHORIZATION, _CONTENT_LENGTH, _REQUEST_ID = b"authorization", b"content-length", b"x-request-id"
REQUEST_ID_LENGTH_MAX = 64

# (status, body, media type, extra headers)
Answer = tuple[int, bytes, str, dict[str, str]]
Handler = Callable[[State, Principal, Receive, bytes | None, str], Awaitable[Answer]]


def transfer_of(body: Any, default_mode: Mode) -> Transfer:
    """The domain's transfer from a decoded body (schemas.TransferRequest), made by the domain's
    own constructor: its checks are the ones msgspec's cannot be (a pattern is searched, so
    `$` would let a final newline in; two fields naming one account)."""
    return transfer_request(
        body.from_account,
        body.to_account,
        body.amount,
        schemas.currency_of(body),
        body.transaction_id,
        body.mode,
        default_mode,
    )


def deposit_of(account_id: str, body: Any) -> Transfer:
    """The domain's deposit from an account id and a decoded body (schemas.Deposit)."""
    return deposit_request(account_id, body.amount, schemas.currency_of(body), body.transaction_id)


async def read_body(receive: Receive, declared: bytes | None, max_bytes: int = BODY_BYTES_MAX) -> bytes:
    """The request body, within its bound (checked against Content-Length first, then as it
    arrives)."""
    if declared is not None and (not declared.isdigit() or int(declared) > max_bytes):
        raise WalletError("malformed_request", f"request body must be at most {max_bytes} bytes")
    body = b""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone()
        body += message.get("body", b"")
        if len(body) > max_bytes:
            raise WalletError("malformed_request", f"request body must be at most {max_bytes} bytes")
        if not message.get("more_body", False):
            whole: bytes = body
            return whole


class ClientGone(Exception):
    """The client closed the connection before its body arrived: nobody to answer."""


def answer_of(result: TransferResult) -> Answer:
    """A success as the transfer's JSON; a recorded failure as the same problem on every retry."""
    if result.status == "failed":
        assert result.error_code is not None
        error = WalletError(
            result.error_code, f"{result.transfer.kind} {result.transfer.transaction_id} failed: {result.error_code}"
        )
        return (
            error.status,
            problem_body(error.status, error.code, error.detail),
            PROBLEM_MEDIA,
            {"Wallet-Transaction-Id": result.transfer.transaction_id},
        )
    return 200, msgspec.json.encode(transfer_view(result)), JSON, {}


def observe_transfer(
    backend: Backend, kind: str, mode: str, outcome: str, started: float, phase: str | None = None
) -> None:
    """Count one answered transfer or deposit; at DEBUG, log it with its phase."""
    mode = mode if mode in MODES_SEEN else "invalid"
    seconds = time.perf_counter() - started
    backend.observe_transfer(kind, mode, outcome, seconds)
    if log.isEnabledFor(logging.DEBUG):
        log.debug(
            "%s answered",
            kind,
            extra={"outcome": outcome, "mode": mode, "duration_ms": round(seconds * 1000, 3), "phase": phase},
        )


async def transfer(state: State, principal: Principal, receive: Receive, declared: bytes | None, path: str) -> Answer:
    body = decode(await read_body(receive, declared), schemas.TransferRequest)
    logs.bind_transaction(body.transaction_id)
    if not principal.is_admin and await owner_of(state, body.from_account) != principal.owner:
        raise WalletError("forbidden", f"this token may not move money out of account {body.from_account}")
    backend: Backend = state.backend
    started = time.perf_counter()
    try:
        result = await backend.submit(transfer_of(body, backend.default_mode))
    except WalletError as error:
        observe_transfer(backend, "transfer", str(body.mode or backend.default_mode), error.code, started)
        raise
    observe_transfer(backend, "transfer", result.protocol, result.error_code or "success", started, result.phase)
    return answer_of(result)


async def deposit(state: State, principal: Principal, receive: Receive, declared: bytes | None, path: str) -> Answer:
    if not principal.is_admin:
        raise WalletError("forbidden", "this needs an admin token")
    account_id = check_account_id(path[len(_DEPOSIT_PREFIX) : -len(_DEPOSIT_SUFFIX)])
    body = decode(await read_body(receive, declared), schemas.Deposit)
    logs.bind_transaction(body.transaction_id)
    backend: Backend = state.backend
    started = time.perf_counter()
    try:
        result = await backend.submit(deposit_of(account_id, body))
    except WalletError as error:
        observe_transfer(backend, "deposit", "local", error.code, started)
        raise
    observe_transfer(backend, "deposit", "local", result.error_code or "success", started, result.phase)
    return answer_of(result)


class MoneyRoutes:
    """POSTs of a transfer or a deposit answered here; everything else by `app`."""

    def __init__(self, app: ASGIApp, state: State) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            route = money_route(scope["path"])
            if route is not None:
                return await serve(self.state, scope, receive, send, route, HANDLERS_BY_ROUTE[route])
        await self.app(scope, receive, send)


HANDLERS_BY_ROUTE: dict[str, Handler] = {TRANSFER_PATH: transfer, DEPOSIT_PATH: deposit}


def money_route(path: str) -> str | None:
    """The money route that serves `path` (TRANSFER_PATH or DEPOSIT_PATH), or None."""
    if path == TRANSFER_PATH:
        return TRANSFER_PATH
    if path.startswith(_DEPOSIT_PREFIX) and path.endswith(_DEPOSIT_SUFFIX) and path.count("/") == 4:
        return DEPOSIT_PATH
    return None


def as_endpoint(route: str, handler: Handler) -> ASGIApp:
    """The same handler as an ASGI endpoint for starlette's route table (reached only where
    MoneyRoutes did not answer first)."""

    async def endpoint(scope: Scope, receive: Receive, send: Send) -> None:
        await serve(scope["app"].state, scope, receive, send, route, handler)

    return endpoint


async def serve(state: State, scope: Scope, receive: Receive, send: Send, route: str, handler: Handler) -> None:
    """Authenticate (401), rate-limit per token (429), run the handler, answer, count."""
    started = time.perf_counter()
    backend: Backend = state.backend
    authorization = declared = request_id = None
    for name, value in scope["headers"]:
        if name == _AUTHORIZATION:
            authorization = value
        elif name == _CONTENT_LENGTH:
            declared = value
        elif name == _REQUEST_ID:
            request_id = value
    logs.transaction_id_var.set(None)
    logs.request_id_var.set(
        request_id[:REQUEST_ID_LENGTH_MAX].decode("latin-1") if request_id else os.urandom(16).hex()
    )
    principal = None
    try:
        principal = state.verifier.verify(authorization.decode("latin-1") if authorization is not None else None)
        await backend.begin((principal.token_id, principal.is_admin))
        status, body, media, headers = await handler(state, principal, receive, declared, scope["path"])
        await backend.end()  # a request that asked the service nothing pays its charge now
    except WalletError as refused:
        error = refused
        if principal is not None:  # a request refused before it asked the service pays its charge now
            try:
                await backend.end()
            except WalletError as limited:
                error = limited
        status, body, media = error.status, problem_body(error.status, error.code, error.detail), PROBLEM_MEDIA
        headers = problem_headers(error)
    except ShardError as error:
        log.warning("shard error on POST %s: %s", scope["path"], error)
        status, body, media = 503, problem_body(503, "shard_unavailable", shard_error_detail(error)), PROBLEM_MEDIA
        headers = problem_headers(WalletError("shard_unavailable", ""))
    except ClientGone:
        return
    except Exception:
        log.exception("unexpected error on POST %s", scope["path"])
        status, media, headers = 500, PROBLEM_MEDIA, {}
        body = problem_body(
            500, "internal_error", "the server failed; the request may be retried with the same transaction_id"
        )
    await respond(send, status, body, media, headers)
    backend.observe_request(route, status, time.perf_counter() - started)


async def respond(send: Send, status: int, body: bytes, media: str, headers: dict[str, str]) -> None:
    raw = [(b"content-length", str(len(body)).encode()), (b"content-type", media.encode())]
    raw.extend((name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers.items())
    start: Message = {"type": "http.response.start", "status": status, "headers": raw}
    await send(start)
    await send({"type": "http.response.body", "body": body})
