"""Every error answer is application/problem+json (RFC 9457) with the stable `code` of
domain/errors.py; its `type` is /problems/{code}, which this app serves."""

from __future__ import annotations

import logging

import msgspec
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from coordinator.api import schemas
from coordinator.api.rate_limits import RateLimited
from core.domain.errors import ERROR_MEANINGS, ERROR_STATUS, HTTP_CODES, WalletError
from shards.errors import ShardError

log = logging.getLogger("wallet.api")
PROBLEM_MEDIA = "application/problem+json"
# An overloaded coordinator (too many transfers in flight) asks clients back after this long.
OVERLOADED_RETRY_AFTER_S = 1
STATUS_OF: dict[str, int] = {code: status for table in (ERROR_STATUS, HTTP_CODES) for code, status in table.items()}


def problem_type(code: str) -> str:
    return f"/problems/{code}"


def problem_body(status: int, code: str, detail: str) -> bytes:
    return msgspec.json.encode(schemas.Problem(problem_type(code), code.replace("_", " "), status, code, detail))


def problem(status: int, code: str, detail: str, headers: dict[str, str] | None = None) -> Response:
    return Response(problem_body(status, code, detail), status_code=status, media_type=PROBLEM_MEDIA, headers=headers)


def problem_headers(error: WalletError) -> dict[str, str]:
    """What a client needs beside the problem: how to authenticate, when to come back."""
    headers: dict[str, str] = {}
    if error.code == "unauthorized":
        headers["WWW-Authenticate"] = 'Bearer realm="wallet", error="invalid_token"'
    if isinstance(error, RateLimited):
        headers["Retry-After"] = str(max(1, round(error.retry_after_s + 0.5)))
    elif error.code in ("overloaded", "shard_unavailable"):
        headers["Retry-After"] = str(OVERLOADED_RETRY_AFTER_S)
    return headers


def wallet_error_response(error: WalletError) -> Response:
    return problem(error.status, error.code, error.detail, problem_headers(error))


def shard_error_detail(error: ShardError) -> str:
    return f"shard {error.shard} is not answering; retry shortly"


def shard_error_response(request: Request, error: ShardError) -> Response:
    log.warning("shard error on %s %s: %s", request.method, request.url.path, error)
    return problem(503, "shard_unavailable", shard_error_detail(error), {"Retry-After": str(OVERLOADED_RETRY_AFTER_S)})


async def on_http_error(request: Request, error: Exception) -> Response:
    """The router's own answers: no such path (404), or a method the path does not take (405,
    with the Allow header the router names)."""
    assert isinstance(error, HTTPException)
    code = (
        "not_found"
        if error.status_code == 404
        else "method_not_allowed"
        if error.status_code == 405
        else "malformed_request"
    )
    headers = dict(error.headers or {})
    if error.status_code == 405 and "Allow" in headers:
        methods = [method.strip() for method in headers["Allow"].split(",")]
        headers["Allow"] = ", ".join(sorted(set(methods) - {"HEAD"}))  # HEAD is served, not documented
    return problem(error.status_code, code, str(error.detail), headers)


async def on_unexpected(request: Request, error: Exception) -> Response:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return problem(500, "internal_error", "the server failed; the request may be retried with the same transaction_id")


def problem_type_view(code: str) -> schemas.ProblemType | None:
    """What a code means, or None if there is no such code."""
    if code not in ERROR_MEANINGS:
        return None
    return schemas.ProblemType(code, STATUS_OF[code], code.replace("_", " "), ERROR_MEANINGS[code])
