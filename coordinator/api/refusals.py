"""Why a request that did not fit its schema was refused, as a code and a sentence a user can
act on, naming the field.

msgspec says that a value failed, in English meant for developers. Its words are never read
here: the value is checked again, field by field in the schema's order, as msgspec checks
it, and the first field that fails is named: with the domain's own check of that field where
there is one (domain/validation.py, domain/money.py: the same code and sentence the service
would give), else with what its schema allows. This runs only for a refused request.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Union, get_args, get_origin

import msgspec
from msgspec import inspect

from core.domain.errors import WalletError
from core.domain.money import check_currency, parse_amount
from core.domain.validation import check_account_id, check_mode, check_moment, check_owner, check_transaction_id


def not_an_object() -> WalletError:
    return WalletError("malformed_request", "request body must be a JSON object")


def _amount(value: object, body: dict[str, Any]) -> None:
    parse_amount(value, check_currency(body.get("currency")))


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


def refusal(value: object, schema: Any) -> WalletError:
    """The first refusal of `value` by `schema` (a Struct, or a union of Structs told apart by a
    tag field), found without reading msgspec's message."""
    if not isinstance(value, dict):
        return not_an_object()
    struct, tag_field = member_for(value, schema)
    if struct is None:  # the tag (currency) is missing or names no member: its own check says which
        if tag_field not in value:
            return missing([tag_field])
        return refused_field(tag_field, value[tag_field], value) or WalletError(
            "validation_error", f"{tag_field} must be one of the documented values"
        )
    fields = msgspec.structs.fields(struct)
    names = {field.encode_name for field in fields} | ({tag_field} if tag_field else set())
    unknown = [name for name in value if name not in names]
    if unknown and struct.__struct_config__.forbid_unknown_fields:
        return WalletError("validation_error", f"unknown fields: {unknown[:1]}")
    absent = [field.encode_name for field in fields if field.required and field.encode_name not in value]
    if absent:
        return missing(absent)
    for field in fields:
        if field.encode_name in value:
            found = refused_field(field.encode_name, value[field.encode_name], value, field.type)
            if found is not None:
                return found
    return WalletError("validation_error", "the request does not fit its schema")  # not reached: a field failed


def missing(names: list[str]) -> WalletError:
    return WalletError("validation_error", f"missing fields: {names[:1]}")


def member_for(value: dict[str, Any], schema: Any) -> tuple[Any, str]:
    """(the Struct that `value` is checked against, the union's tag field or ""); None for the
    Struct when the tag picks no member."""
    if get_origin(schema) is not Union:
        return schema, ""
    members = get_args(schema)
    tag_field = members[0].__struct_config__.tag_field
    tag = value.get(tag_field)
    return next((member for member in members if member.__struct_config__.tag == tag), None), tag_field


def refused_field(name: str, found: object, body: dict[str, Any], kind: Any = None) -> WalletError | None:
    """The refusal of one field's value, or None if it fits."""
    check = FIELD_CHECKS.get(name)
    if check is not None:
        try:
            check(found, body)
        except WalletError as refused:
            return refused
    if kind is None:
        return None
    try:
        msgspec.convert(found, kind)
    except msgspec.ValidationError:
        return WalletError("validation_error", f"{name} must be {allowed(inspect.type_info(kind))}")
    return None


def allowed(kind: inspect.Type) -> str:
    """What a schema type admits, in words."""
    if isinstance(kind, inspect.Metadata):
        return allowed(kind.type)
    if isinstance(kind, inspect.StrType):
        bounds = f" of {kind.min_length or 0}..{kind.max_length} characters" if kind.max_length else ""
        shape = f" matching {kind.pattern}" if kind.pattern else ""
        return f"a string{bounds}{shape}"
    if isinstance(kind, inspect.IntType):
        return f"an integer in {kind.ge}..{kind.le}" if kind.ge is not None and kind.le is not None else "an integer"
    if isinstance(kind, inspect.ListType):
        items = f" of {kind.min_length}..{kind.max_length} items" if kind.max_length is not None else ""
        return f"a list{items}"
    if isinstance(kind, inspect.LiteralType):
        return f"one of {list(kind.values)}"
    if isinstance(kind, inspect.NoneType):
        return "null"
    if isinstance(kind, inspect.UnionType):
        return " or ".join(allowed(member) for member in kind.types)
    return type(kind).__name__.removesuffix("Type").lower()
