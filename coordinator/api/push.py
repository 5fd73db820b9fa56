"""Push, not only poll: a transfer's state as it changes, until it is final.

`GET /v1/transfers/{id}/events` streams server-sent events; `GET /v1/transfers/{id}?wait=S`
answers once the transfer is final or S seconds have passed. Both read the same state the
status endpoint shows, checking again with a growing interval.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING

from coordinator.api.schemas import WAIT_S_MAX
from coordinator.api.views import plain, transfer_view
from core.domain.errors import WalletError

if TYPE_CHECKING:
    from coordinator.service.wallet import WalletService

POLL_INTERVAL_MS_MIN = 10
POLL_INTERVAL_MS_MAX = 500
STREAM_S_MAX = 120  # one event stream's longest life; the client reconnects for more
KEEPALIVE_S = 15  # a comment line on a quiet stream, so proxies keep it open
# Where a transfer stands, as transfer_state answers: the backend's (api/backend.py).
StateReader = Callable[[str], Awaitable[tuple[int, dict[str, object]]]]


async def transfer_state(service: WalletService, transaction_id: str) -> tuple[int, dict[str, object]]:
    """(HTTP status, body): 200 with the recorded outcome, or 202 pending with its phase.
    Raises transfer_not_found when nothing anywhere knows the id."""
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
            # It may have been recorded while we looked elsewhere (its batch committed and left
            # this process between our reads): one more look before calling it unknown.
            return 200, plain(transfer_view(await service.get_transfer(transaction_id)))
        return 202, {"transaction_id": transaction_id, "status": "pending", "phase": phase}
    return 200, plain(transfer_view(result))


async def wait_final(state_of: StateReader, transaction_id: str, wait_s: float) -> tuple[int, dict[str, object]]:
    """The state once final, or as it is after `wait_s`. Unknown ids are not waited for."""
    assert 0 <= wait_s <= WAIT_S_MAX, f"wait is 0..{WAIT_S_MAX} seconds"
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    interval_ms = POLL_INTERVAL_MS_MIN
    status, body = await state_of(transaction_id)
    while status == 202 and loop.time() < deadline:
        await asyncio.sleep(min(interval_ms / 1000, max(0.0, deadline - loop.time())))
        interval_ms = min(POLL_INTERVAL_MS_MAX, interval_ms * 2)
        status, body = await state_of(transaction_id)
    return status, body


def sse(event: str, data: dict[str, object]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


async def stream_events(
    state_of: StateReader, transaction_id: str, first: tuple[int, dict[str, object]], stream_s: float = STREAM_S_MAX
) -> AsyncIterator[bytes]:
    """`phase` events while pending (one per change), then one `final` event, then the end.
    A stream that outlives `stream_s` ends with a `timeout` event: reconnect to go on."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + stream_s
    quiet_since = loop.time()
    interval_ms = POLL_INTERVAL_MS_MIN
    status, body = first
    last: dict[str, object] | None = None
    yield b"retry: 1000\n\n"
    while status == 202:
        if body != last:
            yield sse("phase", body)
            last, quiet_since, interval_ms = body, loop.time(), POLL_INTERVAL_MS_MIN
        if loop.time() >= deadline:
            yield sse("timeout", {"transaction_id": transaction_id, "detail": "stream closed; reconnect"})
            return
        if loop.time() - quiet_since >= KEEPALIVE_S:
            yield b": keep-alive\n\n"
            quiet_since = loop.time()
        await asyncio.sleep(interval_ms / 1000)
        interval_ms = min(POLL_INTERVAL_MS_MAX, interval_ms * 2)
        try:
            status, body = await state_of(transaction_id)
        except WalletError as error:
            # A shard holding the record stopped answering: say so and end; the client reconnects.
            yield sse("error", {"transaction_id": transaction_id, "code": error.code, "detail": error.detail})
            return
    yield sse("final", body)
