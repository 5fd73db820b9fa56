"""Every error answer is application/problem+json (RFC 9457) with the stable `code` of
domain/errors.py; here they are built, one function per kind of failure."""
from __future__ import annotations

import logging

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from coordinator.api.rate_limits import RateLimited
from coordinator.domain.errors import WalletError
from shards.errors import ShardError

log = logging.getLogger("wallet.api")
# An overloaded coordinator (too many transfers in flight) asks clients back after this long.
OVERLOADED_RETRY_AFTER_S = 1


class ProblemResponse(JSONResponse):
    media_type = "application/problem+json"

def problem(status: int, code: str, detail: str) -> ProblemResponse:
    return ProblemResponse(
        {"type": f"https://wallet.dev/problems/{code}", "title": code.replace("_", " "), "status": status,
         "code": code, "detail": detail},
        status_code=status,
    )


def wallet_error_response(error: WalletError) -> Response:
    response = problem(error.status, error.code, error.detail)
    if error.code == "unauthorized":
        response.headers["WWW-Authenticate"] = 'Bearer realm="wallet", error="invalid_token"'
    if isinstance(error, RateLimited):
        response.headers["Retry-After"] = str(max(1, round(error.retry_after_s + 0.5)))
    elif error.code == "overloaded":
        response.headers["Retry-After"] = str(OVERLOADED_RETRY_AFTER_S)
    return response

def shard_error_response(request: Request, error: ShardError) -> Response:
    log.warning("shard error on %s %s: %s", request.method, request.url.path, error)
    return problem(503, "shard_unavailable", f"shard {error.shard} is not answering; retry shortly")

async def on_http_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, HTTPException)
    code = "not_found" if error.status_code == 404 else "method_not_allowed" if error.status_code == 405 else "http_error"
    return problem(error.status_code, code, str(error.detail))

async def on_unexpected(request: Request, error: Exception) -> Response:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return problem(500, "internal_error", "the server failed; the request may be retried with the same transaction_id")
