"""The REST API (starlette). JSON in, JSON out; every error is application/problem+json."""
from __future__ import annotations

import asyncio
import json
import logging
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from coordinator.config import Settings
from coordinator.coordination import open_coordination
from coordinator.zookeeper import TopologyFollower
from coordinator.validation import check_moment
from coordinator.money import format_amount
from ledger.service import LedgerService
from ledger.store import PAGE_SIZE_MAX
from coordinator.errors import WalletError
from coordinator.service import TRANSFERS_PER_REQUEST_MAX, WalletService
from shards.errors import ShardError

log = logging.getLogger("wallet.api")

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
    account = await service_of(request).get_account(request.path_params["account_id"])
    return JSONResponse(account.to_json())


async def deposit(request: Request) -> Response:
    body = await read_body(request, {"amount", "transaction_id"})
    result = await service_of(request).deposit(request.path_params["account_id"], body["amount"], body["transaction_id"])
    return transfer_response(result)


async def balance_transfer(request: Request) -> Response:
    body = await read_body(request, {"from_account", "to_account", "amount", "currency", "transaction_id"}, {"mode"})
    result = await service_of(request).transfer(
        body["from_account"], body["to_account"], body["amount"], body["currency"], body["transaction_id"], body.get("mode")
    )
    return transfer_response(result)


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
    valid = [item for item in checked if isinstance(item, dict)]
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
    return JSONResponse({"results": results})


def transfer_response(result: Any) -> Response:
    """A recorded failure is replayed as the same problem on every retry."""
    if result.status == "failed":
        error = WalletError(result.error_code, f"transfer {result.transfer.transaction_id} failed: {result.error_code}")
        response = problem(error.status, error.code, error.detail)
        response.headers["Wallet-Transaction-Id"] = str(result.transfer.transaction_id)
        return response
    return JSONResponse(result.to_json())


async def show_transfer(request: Request) -> Response:
    transaction_id = request.path_params["transaction_id"]
    service = service_of(request)
    try:
        result = await service.get_transfer(transaction_id)
    except WalletError as error:
        if error.code != "transfer_not_found":
            raise
        # Not recorded yet: a TC/C or Saga transfer between steps, or a batch still open here.
        phase = await service.find_progress(transaction_id)
        if phase is None and service.in_flight(transaction_id):
            phase = "preparing"
        if phase is None and await service.in_doubt(transaction_id):
            phase = "in-doubt"  # prepared, outcome not yet applied: recovery will finish it
        if phase is None:
            raise
        return JSONResponse({"transaction_id": transaction_id, "status": "pending", "phase": phase}, 202)
    return JSONResponse(result.to_json())


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


async def on_wallet_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, WalletError)
    return problem(error.status, error.code, error.detail)


async def on_shard_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, ShardError)
    log.warning("shard error on %s %s: %s", request.method, request.url.path, error)
    return problem(503, "shard_unavailable", f"shard {error.shard} is not answering; retry shortly")


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
                run_recovery=True, run_relay=True)
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

    routes = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/v1/accounts", create_account, methods=["POST"]),
        Route("/v1/accounts/{account_id}", show_account, methods=["GET"]),
        Route("/v1/accounts/{account_id}/deposits", deposit, methods=["POST"]),
        Route("/v1/accounts/{account_id}/balance", balance_at, methods=["GET"]),
        Route("/v1/accounts/{account_id}/transactions", account_transactions, methods=["GET"]),
        Route("/v1/wallet/balance_transfer", balance_transfer, methods=["POST"]),
        Route("/v1/transfers:batch", batch_transfer, methods=["POST"]),
        Route("/v1/transfers/{transaction_id}", show_transfer, methods=["GET"]),
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
    if service is not None:
        app.state.service = service
    return app
