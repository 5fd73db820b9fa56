"""The money routes: deposits, one transfer, a batch of transfers, and where a transfer stands
(its status, the long poll and the server-sent events)."""
from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any, AsyncIterator

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from coordinator.api import push as events
from coordinator.api.access import may_see_transfer, owned_item, principal_of, require_owner, service_of
from coordinator.api.bodies import BATCH_BODY_BYTES_MAX, query_integer, read_body
from coordinator.api.problems import problem
from coordinator.domain.errors import WalletError
from coordinator.runtime import logs
from coordinator.service.submission import TRANSFERS_PER_REQUEST_MAX

log = logging.getLogger("wallet.api")


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
