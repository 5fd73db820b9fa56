"""Requests in: the body read within its size bound and decoded by its schema (api/schemas.py),
path and query parameters by theirs. When msgspec refuses a value, the domain's check of
that field names the code and the sentence (the same ones the service would give), so a
refusal reads the same whichever layer catches it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, TypeVar

import msgspec
from starlette.requests import Request

from core.domain.errors import WalletError
from core.domain.money import check_currency, parse_amount
from core.domain.validation import check_account_id, check_mode, check_moment, check_owner, check_transaction_id

BODY_BYTES_MAX = 16 * 1024
BATCH_BODY_BYTES_MAX = 512 * 1024
QUERY_INTEGER = re.compile(r"[0-9]{1,19}")  # ASCII digits (str.isdigit takes other scripts' too)

Schema = TypeVar("Schema")
# msgspec's complaint: "<what> - at `$.field`" (nothing after the message for the top level)
_AT = re.compile(r"^(?P<message>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.S)
_FIELD = re.compile(r"^\.(?P<field>[A-Za-z_]+)")
_NAMED = re.compile(r"field `(?P<field>[^`]+)`")


def _amount(value: object, body: dict[str, Any]) -> None:
    currency = body.get("currency")
    parse_amount(value, check_currency(currency))


# field -> the domain check that names its code and sentence (raises WalletError)
FIELD_CHECKS: dict[str, Callable[[object, dict[str, Any]], object]] = {
    "account_id": lambda value, body: check_account_id(value),
    "from_account": lambda value, body: check_account_id(value, "from_account"),
    "to_account": lambda value, body: check_account_id(value, "to_account"),
    "owner": lambda value, body: check_owner(value),
    "currency": lambda value, body: check_currency(value),
    "transaction_id": lambda value, body: check_transaction_id(value),
    "mode": lambda value, body: check_mode(value, "2pc"),
    "amount": _amount,
    "at": lambda value, body: check_moment(value),
}


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


def decode(raw: bytes, schema: Any) -> Any:
    try:
        return decoder_of(schema).decode(raw)
    except msgspec.ValidationError as error:
        try:
            plain = msgspec.json.decode(raw)
        except msgspec.DecodeError:  # not reachable: it decoded once already
            plain = None
        raise explain(error, plain) from None
    except msgspec.DecodeError:
        raise WalletError("malformed_request", "request body must be a JSON object") from None


def convert(value: object, schema: Any) -> Any:
    """A value already parsed (a batch item, path parameters) checked by its schema."""
    try:
        return msgspec.convert(value, schema)
    except msgspec.ValidationError as error:
        raise explain(error, value) from None


def explain(error: msgspec.ValidationError, plain: object) -> WalletError:
    """The WalletError a user can act on, from msgspec's first complaint about `plain`."""
    found = _AT.match(str(error))
    assert found is not None
    message, path = found.group("message"), found.group("path")
    if not path:  # the object itself
        if message.startswith("Expected `object`"):
            return WalletError("malformed_request", "request body must be a JSON object")
        named = _NAMED.search(message)
        if message.startswith("Object missing required field") and named:
            return WalletError("validation_error", f"missing fields: {[named.group('field')]}")
        if message.startswith("Object contains unknown field") and named:
            return WalletError("validation_error", f"unknown fields: {[named.group('field')]}")
        return WalletError("validation_error", message)
    field = _FIELD.match(path)
    name = field.group("field") if field else path
    body = plain if isinstance(plain, dict) else {}
    check = FIELD_CHECKS.get(name)
    if check is not None and name in body:
        try:
            check(body[name], body)
        except WalletError as refusal:
            return refusal
    return WalletError("validation_error", f"{name}: {message}")


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
