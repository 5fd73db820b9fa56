"""Requests in: the body read within its size bound and decoded by its schema (api/schemas.py),
path and query parameters by theirs. When msgspec refuses a value, api/refusals.py
names the field, with the domain's check of it (the code and sentence the service would give).
"""

from __future__ import annotations

import re
from typing import Any, TypeVar

import msgspec
from starlette.requests import Request

from coordinator.api.refusals import not_an_object, refusal
from core.domain.errors import WalletError
from core.domain.limits import BATCH_BODY_BYTES_MAX, BODY_BYTES_MAX

__all__ = ["BATCH_BODY_BYTES_MAX", "BODY_BYTES_MAX", "convert", "decode", "path", "query", "read_body", "read_raw"]

QUERY_INTEGER = re.compile(r"[0-9]{1,19}")  # ASCII digits (str.isdigit takes other scripts' too)

Schema = TypeVar("Schema")


async def read_raw(request: Request, max_bytes: int = BODY_BYTES_MAX) -> bytes:
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
    return b"".join(chunks)


async def read_body(request: Request, schema: type[Schema], max_bytes: int = BODY_BYTES_MAX) -> Schema:
    """The body, decoded and checked by its schema, or the WalletError to answer."""
    return decode(await read_raw(request, max_bytes), schema)


# One decoder per schema: building one costs more than decoding (70 µs for a union of
# Structs against 5 µs to decode with a kept one).
_DECODERS: dict[Any, msgspec.json.Decoder[Any]] = {}


def decoder_of(schema: Any) -> msgspec.json.Decoder[Any]:
    found = _DECODERS.get(schema)
    if found is None:
        found = _DECODERS[schema] = msgspec.json.Decoder(schema)
    return found


def decode(raw: bytes, schema: type[Schema]) -> Schema:
    try:
        decoded: Schema = decoder_of(schema).decode(raw)
        return decoded
    except msgspec.ValidationError:
        pass
    except msgspec.DecodeError:
        raise not_an_object() from None
    try:  # refused by the schema; is it JSON at all? (a typed decoder can stop before its end)
        plain = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        raise not_an_object() from None
    raise refusal(plain, schema)


def convert(value: object, schema: type[Schema]) -> Schema:
    """A value already parsed (path or query parameters) checked by its schema."""
    try:
        return msgspec.convert(value, schema)
    except msgspec.ValidationError:
        raise refusal(value, schema) from None


def query(request: Request, schema: type[Schema]) -> Schema:
    """The query parameters the schema names (others are ignored), integers as ASCII digits."""
    info = msgspec.inspect.type_info(schema)
    assert isinstance(info, msgspec.inspect.StructType), "query parameters are a Struct"
    fields = info.fields
    values: dict[str, object] = {}
    for field in fields:
        raw = request.query_params.get(field.name)
        if raw is None:
            continue
        kind = field.type.type if isinstance(field.type, msgspec.inspect.Metadata) else field.type
        if isinstance(kind, msgspec.inspect.IntType):
            low, high = kind.ge, kind.le
            assert low is not None and high is not None, f"query integer {field.name} needs both bounds"
            bounds = f"{low}..{high}"
            if not QUERY_INTEGER.fullmatch(raw) or not low <= int(raw) <= high:
                raise WalletError("validation_error", f"{field.name} must be an integer in {bounds}")
            values[field.name] = int(raw)
        else:
            values[field.name] = raw
    return convert(values, schema)


def path(request: Request, schema: type[Schema]) -> Schema:
    return convert(dict(request.path_params), schema)
