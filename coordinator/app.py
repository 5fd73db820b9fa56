"""The REST API (starlette). JSON in, JSON out; every error is application/problem+json."""
from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Awaitable, Callable

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from coordinator import events, logs, openapi
from coordinator.auth import OwnerCache, Principal, TokenVerifier
from coordinator.config import Settings
from coordinator.coordination import open_coordination
from coordinator.zookeeper import TopologyFollower
from coordinator.limits import RateLimited, RateLimiter
from coordinator.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE, Metrics
from coordinator.validation import check_account_id, check_moment
from coordinator.money import format_amount
from ledger.service import LedgerService
from ledger.store import PAGE_SIZE_MAX
from coordinator.errors import WalletError
from coordinator.service import TRANSFERS_PER_REQUEST_MAX, WalletService
from shards import migrate
from shards.errors import ShardError

log = logging.getLogger("wallet.api")
READY_CHECK_TIMEOUT_S = 5.0

BODY_BYTES_MAX = 16 * 1024
BATCH_BODY_BYTES_MAX = 512 * 1024


class ProblemResponse(JSONResponse):
    media_type = "application/problem+json"


def problem(status: int, code: str, detail: str) -> ProblemResponse:
    return ProblemResponse(
        {"type": f"https://wallet.dev/problems/{code}", "title": code.replace("_", " "), "status": status,
         "code": code, "detail": detail},
        status_code=status,
    )


async def read_body(request: Request, required: set[str], optional: set[str] = frozenset(),  # type: ignore[assignment]
                    max_bytes: int = BODY_BYTES_MAX) -> dict[str, Any]:
    """The JSON object body, with exactly the known fields."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > max_bytes):
        raise WalletError("malformed_request", f"request body must be at most {max_bytes} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        chunks.append(chunk)
        size += len(chunk)
        if size > max_bytes:
            raise WalletError("malformed_request", f"request body must be at most {max_bytes} bytes")
    raw = b"".join(chunks)
    try:
        body = json.loads(raw, parse_float=_refuse_float, parse_constant=_refuse_float)
    except (ValueError, UnicodeDecodeError):
        raise WalletError("malformed_request", "request body must be a JSON object") from None
    if not isinstance(body, dict):
        raise WalletError("malformed_request", "request body must be a JSON object")
    unknown = set(body) - required - optional
    if unknown:
        raise WalletError("validation_error", f"unknown fields: {sorted(unknown)}")
    missing = required - set(body)
    if missing:
        raise WalletError("validation_error", f"missing fields: {sorted(missing)}")
    return body


def _refuse_float(text: str) -> Any:
    raise WalletError("invalid_amount", "numbers with fractions are not accepted: send amounts as decimal strings")


def service_of(request: Request) -> WalletService:
    return request.app.state.service


async def create_account(request: Request) -> Response:
    body = await read_body(request, {"account_id", "owner", "currency"})
    account, created = await service_of(request).create_account(body["account_id"], body["owner"], body["currency"])
    return JSONResponse(account.to_json(), status_code=201 if created else 200)


async def show_account(request: Request) -> Response:
    await require_owner(request, request.path_params["account_id"], "read")
    account = await service_of(request).get_account(request.path_params["account_id"])
    return JSONResponse(account.to_json())


async def deposit(request: Request) -> Response:
    body = await read_body(request, {"amount", "transaction_id"})
    logs.bind_transaction(body["transaction_id"])
    started = time.perf_counter()
    try:
        result = await service_of(request).deposit(request.path_params["account_id"], body["amount"],
                                                   body["transaction_id"])
    except WalletError as error:
        observe(request, "deposit", "local", error.code, started)
        raise
    observe(request, "deposit", "local", result.error_code or "success", started, result)
    return transfer_response(result)


async def balance_transfer(request: Request) -> Response:
    body = await read_body(request, {"from_account", "to_account", "amount", "currency", "transaction_id"}, {"mode"})
    logs.bind_transaction(body["transaction_id"])
    await require_owner(request, body["from_account"], "move money out of", "from_account")
    started = time.perf_counter()
    try:
        result = await service_of(request).transfer(
            body["from_account"], body["to_account"], body["amount"], body["currency"], body["transaction_id"],
            body.get("mode"))
    except WalletError as error:
        observe(request, "transfer", str(body.get("mode") or service_of(request).settings.default_mode),
                error.code, started)
        raise
    observe(request, "transfer", result.protocol, result.error_code or "success", started, result)
    return transfer_response(result)


def observe(request: Request, kind: str, mode: str, outcome: str, started: float, result: Any = None) -> None:
    """Count one answered transfer or deposit, and log it with its phase."""
    mode = mode if mode in ("local", "2pc", "tcc", "saga") else "invalid"
    seconds = time.perf_counter() - started
    request.app.state.metrics.observe_transfer(kind, mode, outcome, seconds)
    log.info("%s answered", kind, extra={"outcome": outcome, "mode": mode, "duration_ms": round(seconds * 1000, 3),
                                         "phase": getattr(result, "phase", None)})


# -- who may do what -----------------------------------------------------------------------
def principal_of(request: Request) -> Principal:
    return request.state.principal


async def owner_of(request: Request, account_id: str) -> str | None:
    """The account's owner (cached: owners never change), or None if there is no such account."""
    owners: OwnerCache = request.app.state.owners
    owner = owners.get(account_id)
    if owner is None:
        try:
            owner = (await service_of(request).get_account(account_id)).owner
        except WalletError as error:
            if error.code != "account_not_found":
                raise
            return None
        owners.put(account_id, owner)
    return owner


async def require_owner(request: Request, account_id: object, action: str, field: str = "account_id") -> None:
    """A user token acts only on its own accounts. Someone else's account and no account
    get the same answer, so nothing tells whether another person's account exists."""
    principal = principal_of(request)
    if principal.is_admin:
        return
    checked = check_account_id(account_id, field)
    if await owner_of(request, checked) != principal.owner:
        raise WalletError("forbidden", f"this token may not {action} account {checked}")


async def may_see_transfer(request: Request, body: dict[str, object]) -> bool:
    principal = principal_of(request)
    if principal.is_admin or body.get("status") == "pending":
        return True  # pending shows no accounts or amounts, only that the id is in use
    for account in (body.get("from_account"), body.get("to_account")):
        if isinstance(account, str) and await owner_of(request, account) == principal.owner:
            return True
    return False


TRANSFER_FIELDS = {"from_account", "to_account", "amount", "currency", "transaction_id"}


async def batch_transfer(request: Request) -> Response:
    """Up to TRANSFERS_PER_REQUEST_MAX transfers; a result per item, in order. Items fail alone."""
    body = await read_body(request, {"transfers"}, max_bytes=BATCH_BODY_BYTES_MAX)
    items = body["transfers"]
    if not isinstance(items, list) or not 1 <= len(items) <= TRANSFERS_PER_REQUEST_MAX:
        raise WalletError("validation_error", f"transfers must be a list of 1..{TRANSFERS_PER_REQUEST_MAX} transfers")
    checked: list[dict[str, Any] | WalletError] = []
    for item in items:
        if not isinstance(item, dict):
            checked.append(WalletError("validation_error", "each transfer must be a JSON object"))
        elif set(item) - TRANSFER_FIELDS - {"mode"}:
            checked.append(WalletError("validation_error", f"unknown fields: {sorted(set(item) - TRANSFER_FIELDS - {'mode'})}"))
        elif TRANSFER_FIELDS - set(item):
            checked.append(WalletError("validation_error", f"missing fields: {sorted(TRANSFER_FIELDS - set(item))}"))
        else:
            checked.append(item)
    if not principal_of(request).is_admin:
        checked = list(await asyncio.gather(*(owned_item(request, item) for item in checked)))
    valid = [item for item in checked if isinstance(item, dict)]
    started = time.perf_counter()
    outcomes = iter(await service_of(request).transfer_many(valid))
    results = []
    for item in checked:
        outcome = item if isinstance(item, WalletError) else next(outcomes)
        if isinstance(outcome, WalletError):
            results.append({"status": "failed", "code": outcome.code, "detail": outcome.detail,
                            "transaction_id": item.get("transaction_id") if isinstance(item, dict) else None})
        elif outcome.status == "failed":
            results.append({**outcome.to_json(), "code": outcome.error_code})
        else:
            results.append(outcome.to_json())
        if not isinstance(item, WalletError) or item.code == "forbidden":
            mode = outcome.protocol if not isinstance(outcome, WalletError) else str(
                item.get("mode") if isinstance(item, dict) else "invalid")
            code = outcome.code if isinstance(outcome, WalletError) else (outcome.error_code or "success")
            request.app.state.metrics.observe_transfer("transfer", mode if mode in ("local", "2pc", "tcc", "saga")
                                                       else "invalid", code, time.perf_counter() - started)
    return JSONResponse({"results": results})


async def owned_item(request: Request, item: dict[str, Any] | WalletError) -> dict[str, Any] | WalletError:
    """A user's batch item moving money out of an account it does not own fails alone."""
    if isinstance(item, WalletError):
        return item
    try:
        await require_owner(request, item.get("from_account"), "move money out of", "from_account")
    except WalletError as error:
        if error.code == "forbidden":
            return error
    return item  # other bad input is the service's to name


def transfer_response(result: Any) -> Response:
    """A recorded failure is replayed as the same problem on every retry."""
    if result.status == "failed":
        error = WalletError(result.error_code, f"transfer {result.transfer.transaction_id} failed: {result.error_code}")
        response = problem(error.status, error.code, error.detail)
        response.headers["Wallet-Transaction-Id"] = str(result.transfer.transaction_id)
        return response
    return JSONResponse(result.to_json())


async def show_transfer(request: Request) -> Response:
    """The recorded outcome (200), or 202 while pending; ?wait=S answers once final (long poll)."""
    transaction_id = request.path_params["transaction_id"]
    logs.bind_transaction(transaction_id)
    wait_s = query_integer(request, "wait", 0, 0, events.WAIT_S_MAX)
    status, body = await events.wait_final(service_of(request), transaction_id, wait_s)
    if not await may_see_transfer(request, body):
        raise WalletError("transfer_not_found", f"no transfer with transaction_id {transaction_id}")
    return JSONResponse(body, status)


async def transfer_events(request: Request) -> Response:
    """Server-sent events: `phase` while the transfer is pending, then `final`, then the end."""
    transaction_id = request.path_params["transaction_id"]
    logs.bind_transaction(transaction_id)
    service = service_of(request)
    first = await events.transfer_state(service, transaction_id)
    if not await may_see_transfer(request, first[1]):
        raise WalletError("transfer_not_found", f"no transfer with transaction_id {transaction_id}")

    async def visible() -> AsyncIterator[bytes]:
        async for chunk in events.stream_events(service, transaction_id, first):
            if chunk.startswith(b"event: final\n") and not await may_see_transfer(
                    request, json.loads(chunk.split(b"data: ", 1)[1])):
                yield events.sse("error", {"transaction_id": transaction_id, "code": "transfer_not_found",
                                           "detail": "no transfer with this transaction_id for this token"})
                return
            yield chunk

    return StreamingResponse(visible(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


HISTORY_PAGE_DEFAULT = 100


def ledger_of(request: Request) -> LedgerService:
    ledger = service_of(request).ledger
    if ledger is None:
        raise WalletError("validation_error", "this deployment has no event ledger")
    return ledger


def query_integer(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise WalletError("validation_error", f"{name} must be an integer in {low}..{high}")
    return int(raw)


async def balance_at(request: Request) -> Response:
    """The account's balance at a past moment, rebuilt from the ledger."""
    await require_owner(request, request.path_params["account_id"], "read")
    account = await service_of(request).get_account(request.path_params["account_id"])
    at = check_moment(request.query_params.get("at"))
    replay = await ledger_of(request).replay(at, account.account_id)
    found = replay.balances.get(account.account_id)
    balance, reserved, version = (found.balance, found.reserved, found.version) if found else (0, 0, 0)
    return JSONResponse({
        "account_id": account.account_id, "currency": account.currency, "at": at.isoformat(),
        "balance": format_amount(balance, account.currency), "reserved": format_amount(reserved, account.currency),
        "available": format_amount(balance - reserved, account.currency), "version": version,
    })


async def account_transactions(request: Request) -> Response:
    """An account's history from the ledger (the read side), a page at a time by version."""
    await require_owner(request, request.path_params["account_id"], "read")
    account = await service_of(request).get_account(request.path_params["account_id"])
    after = query_integer(request, "after_version", 0, 0, 2**62)
    limit = query_integer(request, "limit", HISTORY_PAGE_DEFAULT, 1, PAGE_SIZE_MAX)
    events = await ledger_of(request).history(account.account_id, after, limit)
    items = [{
        "version": e.version, "transaction_id": str(e.transaction_id), "kind": e.kind,
        "amount": format_amount(e.amount, e.currency), "reserved_change": format_amount(e.reserved_delta, e.currency),
        "balance_after": format_amount(e.balance_after, e.currency), "at": e.created_at.isoformat(),
    } for e in events]
    next_version = events[-1].version if len(events) == limit else None
    return JSONResponse({"account_id": account.account_id, "items": items, "next_after_version": next_version})


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    """Ready when the topology is loaded and every shard (and the ledger) answers at the
    migration head."""
    service: WalletService | None = getattr(request.app.state, "service", None)
    if service is None:
        return problem(503, "shard_unavailable", "the topology is not loaded yet")
    heads = request.app.state.heads
    databases = [(name, dsn, "shard") for name, dsn in sorted(service.topology.shards.items())]
    if service.topology.ledger:
        databases.append(("ledger", service.topology.ledger, "ledger"))

    async def one(name: str, dsn: str, target: str) -> str:
        try:
            async with asyncio.timeout(READY_CHECK_TIMEOUT_S):
                found = await migrate.read_revision(name, dsn, target)
        except TimeoutError:
            return "unreachable: no answer"
        if found.error:
            return found.error
        return "ok" if found.revision == heads[target] else f"at {found.revision}, head is {heads[target]}"

    answers = await asyncio.gather(*(one(*database) for database in databases))
    checks = {name: answer for (name, _, _), answer in zip(databases, answers)}
    if any(answer != "ok" for answer in checks.values()):
        response = problem(503, "shard_unavailable", "not ready: " + "; ".join(
            f"{name}: {answer}" for name, answer in checks.items() if answer != "ok"))
        return response
    return JSONResponse({"status": "ready", "checks": checks, "topology_version": service.topology.version})


async def metrics_endpoint(request: Request) -> Response:
    metrics: Metrics = request.app.state.metrics
    await metrics.refresh(service_of(request))
    return Response(metrics.render(), media_type=METRICS_CONTENT_TYPE)


async def openapi_endpoint(request: Request) -> Response:
    return JSONResponse(request.app.state.openapi)


def guarded(request_handler: Callable[[Request], Awaitable[Response]], route: str,
            admin: bool = False, public: bool = False) -> Callable[[Request], Awaitable[Response]]:
    """Authenticate (401), rate-limit per token (429), check the scope (403), count, log."""

    async def endpoint(request: Request) -> Response:
        started = time.perf_counter()
        logs.transaction_id_var.set(None)
        logs.request_id_var.set(request.headers.get("x-request-id", "")[:64] or uuid.uuid4().hex)
        try:
            if not public:
                state = request.app.state
                principal = state.verifier.verify(request.headers.get("authorization"))
                request.state.principal = principal
                (state.admin_limiter if principal.is_admin else state.limiter).take(principal.token_id)
                if admin and not principal.is_admin:
                    raise WalletError("forbidden", "this needs an admin token")
            response = await request_handler(request)
        except WalletError as error:
            response = wallet_error_response(error)
        except ShardError as error:
            response = shard_error_response(request, error)
        metrics: Metrics = request.app.state.metrics
        metrics.requests.labels(route, str(response.status_code)).inc()
        metrics.request_seconds.labels(route).observe(time.perf_counter() - started)
        return response

    return endpoint


def wallet_error_response(error: WalletError) -> Response:
    response = problem(error.status, error.code, error.detail)
    if error.code == "unauthorized":
        response.headers["WWW-Authenticate"] = 'Bearer realm="wallet", error="invalid_token"'
    if isinstance(error, RateLimited):
        response.headers["Retry-After"] = str(max(1, round(error.retry_after_s + 0.5)))
    return response


def shard_error_response(request: Request, error: ShardError) -> Response:
    log.warning("shard error on %s %s: %s", request.method, request.url.path, error)
    return problem(503, "shard_unavailable", f"shard {error.shard} is not answering; retry shortly")


async def on_wallet_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, WalletError)
    return wallet_error_response(error)


async def on_shard_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, ShardError)
    return shard_error_response(request, error)


async def on_http_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, HTTPException)
    code = "not_found" if error.status_code == 404 else "method_not_allowed" if error.status_code == 405 else "http_error"
    return problem(error.status_code, code, str(error.detail))


async def on_unexpected(request: Request, error: Exception) -> Response:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return problem(500, "internal_error", "the server failed; the request may be retried with the same transaction_id")


def build_app(settings: Settings | None = None, service: WalletService | None = None) -> Starlette:
    """With `service`, the caller owns its lifecycle (tests); otherwise the app opens one."""
    settings = settings or Settings.from_environment()
    verifier = TokenVerifier.from_settings(settings)
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if service is not None:
            app.state.service = service
            yield
            return
        coordination = await open_coordination(settings)
        try:
            topology = await asyncio.to_thread(coordination.store.load)
            opened = await WalletService(topology, settings, coordination.store, coordination.is_leader).open(
                run_recovery=True, run_relay=settings.run_relay)
            metrics.watch_batches(opened)
            follower = TopologyFollower(coordination.store, opened.switch_topology)
            follower.start()
            try:
                app.state.service = opened
                yield
            finally:
                await follower.stop()
                await opened.close()
        finally:
            await coordination.close()

    def route(path: str, handler: Callable[[Request], Awaitable[Response]], method: str = "GET",
              admin: bool = False, public: bool = False) -> Route:
        return Route(path, guarded(handler, path, admin=admin, public=public), methods=[method])

    routes = [  # matched in order: the money routes, the busiest by far, first
        route("/v1/wallet/balance_transfer", balance_transfer, "POST"),
        route("/v1/transfers:batch", batch_transfer, "POST"),
        route("/healthz", healthz, public=True),
        route("/readyz", readyz, public=True),
        route("/metrics", metrics_endpoint, admin=True),
        route("/openapi.json", openapi_endpoint),
        route("/v1/accounts", create_account, "POST", admin=True),
        route("/v1/accounts/{account_id}", show_account),
        route("/v1/accounts/{account_id}/deposits", deposit, "POST", admin=True),
        route("/v1/accounts/{account_id}/balance", balance_at),
        route("/v1/accounts/{account_id}/transactions", account_transactions),
        route("/v1/transfers/{transaction_id}", show_transfer),
        route("/v1/transfers/{transaction_id}/events", transfer_events),
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={
            WalletError: on_wallet_error,
            ShardError: on_shard_error,
            HTTPException: on_http_error,
            Exception: on_unexpected,
        },
    )
    app.state.verifier = verifier
    app.state.limiter = RateLimiter(settings.rate_per_s, settings.rate_burst)
    app.state.admin_limiter = RateLimiter(settings.admin_rate_per_s, settings.admin_rate_burst)
    app.state.owners = OwnerCache()
    app.state.metrics = metrics
    app.state.openapi = openapi.document()
    app.state.heads = {"shard": migrate.head_revision(), "ledger": migrate.head_revision("ledger")}
    if service is not None:
        app.state.service = service
        metrics.watch_batches(service)
    return app
