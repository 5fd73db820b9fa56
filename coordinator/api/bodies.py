"""Request bodies and query parameters: the JSON object with exactly the known fields, numbers
with fractions refused (amounts are decimal strings), bounded sizes."""
from __future__ import annotations

import json
from typing import AbstractSet, Any

from starlette.requests import Request

from coordinator.domain.errors import WalletError

BODY_BYTES_MAX = 16 * 1024

BATCH_BODY_BYTES_MAX = 512 * 1024


async def read_body(request: Request, required: AbstractSet[str], optional: AbstractSet[str] = frozenset(),
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

def query_integer(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise WalletError("validation_error", f"{name} must be an integer in {low}..{high}")
    return int(raw)
