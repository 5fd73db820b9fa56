"""The transfer routes beside the two money routes (api/money.py): a batch of transfers, and
where a transfer stands (its status, the long poll and the server-sent events)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator

import msgspec
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from coordinator.api import push, schemas
from coordinator.api.access import backend_of, may_see_transfer, owned_item, principal_of
from coordinator.api.bodies import BATCH_BODY_BYTES_MAX, decode, path, query, read_body
from coordinator.api.money import MODES_SEEN, transfer_of
from coordinator.api.views import json_response, transfer_view
from core.domain.errors import WalletError
from core.domain.transfers import Mode, Transfer, TransferResult
from core.runtime import logs

log = logging.getLogger("wallet.api")


def item_of(raw: msgspec.Raw, default_mode: Mode) -> tuple[str | None, Transfer | WalletError]:
    """One batch item (its JSON, kept raw), checked as the body of a transfer: (its
    transaction id as sent, if it decoded; the transfer, or the refusal that is its answer)."""
    try:
        checked = decode(bytes(raw), schemas.TransferRequest)
    except WalletError as error:
        if error.code == "malformed_request":  # the item is not an object
            return None, WalletError("validation_error", "each transfer must be a JSON object")
        return None, error
    try:
        return checked.transaction_id, transfer_of(checked, default_mode)
    except WalletError as error:
        return checked.transaction_id, error


async def transfer_batch(request: Request) -> Response:
    """Up to TRANSFERS_PER_REQUEST_MAX transfers; a result per item, in order. Items fail alone."""
    body = await read_body(request, schemas.BatchRequest, max_bytes=BATCH_BODY_BYTES_MAX)
    backend = backend_of(request)
    sent, checked = zip(*(item_of(item, backend.default_mode) for item in body.transfers), strict=True)
    items: list[Transfer | WalletError] = list(checked)
    if not principal_of(request).is_admin:
        items = list(await asyncio.gather(*(owned_item(request, item) for item in items)))
    started = time.perf_counter()
    outcomes = iter(await backend.submit_many([item for item in items if isinstance(item, Transfer)]))
    results = []
    for transaction_id, raw_item, item in zip(sent, body.transfers, items, strict=True):
        outcome = item if isinstance(item, WalletError) else next(outcomes)
        results.append(batch_result(transaction_id, outcome))
        if transaction_id is not None:  # it decoded: count it as an answered transfer
            mode = outcome.protocol if isinstance(outcome, TransferResult) else mode_sent(raw_item)
            code = outcome.code if isinstance(outcome, WalletError) else (outcome.error_code or "success")
            backend.observe_transfer(
                "transfer", mode if mode in MODES_SEEN else "invalid", code, time.perf_counter() - started
            )
    return json_response(schemas.BatchResults(results))


def mode_sent(raw: msgspec.Raw) -> str:
    item = msgspec.json.decode(bytes(raw))
    return str(item.get("mode")) if isinstance(item, dict) else "invalid"


def batch_result(transaction_id: str | None, outcome: TransferResult | WalletError) -> schemas.BatchResult:
    if isinstance(outcome, WalletError):
        return schemas.BatchResult("failed", transaction_id, outcome.code, outcome.detail)
    view = transfer_view(outcome)
    return schemas.BatchResult(
        view.status,
        view.transaction_id,
        code=view.error_code,
        kind=view.kind,
        from_account=view.from_account,
        to_account=view.to_account,
        amount=view.amount,
        currency=view.currency,
        mode=view.mode,
        protocol=view.protocol,
        phase=view.phase,
        error_code=view.error_code,
        created_at=view.created_at,
    )


async def get_transfer(request: Request) -> Response:
    """The recorded outcome (200), or 202 while pending; ?wait=S answers once final (long poll)."""
    transaction_id = path(request, schemas.TransferPath).transaction_id
    logs.bind_transaction(transaction_id)
    wait_s = query(request, schemas.WaitQuery).wait
    status, body = await push.wait_final(backend_of(request).transfer_state, transaction_id, wait_s)
    if not await may_see_transfer(request, body):
        raise WalletError("transfer_not_found", f"no transfer with transaction_id {transaction_id}")
    return Response(json.dumps(body, separators=(",", ":")), status, media_type="application/json")


async def transfer_events(request: Request) -> Response:
    """Server-sent events: `phase` while the transfer is pending, then `final`, then the end."""
    transaction_id = path(request, schemas.TransferPath).transaction_id
    logs.bind_transaction(transaction_id)
    state_of = backend_of(request).transfer_state
    first = await state_of(transaction_id)
    if not await may_see_transfer(request, first[1]):
        raise WalletError("transfer_not_found", f"no transfer with transaction_id {transaction_id}")

    async def visible() -> AsyncIterator[bytes]:
        async for chunk in push.stream_events(state_of, transaction_id, first):
            if chunk.startswith(b"event: final\n") and not await may_see_transfer(
                request, json.loads(chunk.split(b"data: ", 1)[1])
            ):
                yield push.sse(
                    "error",
                    {
                        "transaction_id": transaction_id,
                        "code": "transfer_not_found",
                        "detail": "no transfer with this transaction_id for this token",
                    },
                )
                return
            yield chunk

    return StreamingResponse(
        visible(), media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )
