"""The contract holds together, with no server: each rule the document states accepts exactly
what the server's check accepts; the document, the routes and the README name the same
operations and codes."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coordinator.api import openapi, schemas
from coordinator.api.app import HANDLERS, MONEY_HANDLERS
from coordinator.api.bodies import decode
from core.domain.errors import ERROR_MEANINGS, ERROR_STATUS, HTTP_CODES, WalletError
from core.domain.money import CURRENCY_DECIMALS, amount_rule, parse_amount
from core.domain.validation import (
    ACCOUNT_ID_RULE,
    OWNER_RULE,
    UUID_RULE,
    check_account_id,
    check_owner,
    check_transaction_id,
)
from tests.helpers import REPOSITORY

DECIMALS = sorted(set(CURRENCY_DECIMALS.values()))
CURRENCY_WITH = {
    decimals: next(c for c, d in sorted(CURRENCY_DECIMALS.items()) if d == decimals) for decimals in DECIMALS
}
AMOUNT_LIKE = st.text(alphabet="0123456789.-+e ", max_size=40)


def accepted(check: object, value: object) -> bool:
    try:
        check(value)  # type: ignore[operator]
    except WalletError:
        return False
    return True


@pytest.mark.parametrize("decimals", DECIMALS)
@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_the_amount_rule_is_parse_amount(decimals: int, data: st.DataObject) -> None:
    """Protects 'a schema-valid amount is never refused': the pattern per currency accepts a
    string exactly when parse_amount does (positive, its decimals, at most 10^15 minor units)."""
    rule = amount_rule(decimals)
    text = data.draw(
        st.one_of(
            AMOUNT_LIKE,
            st.from_regex(rule, fullmatch=True),
            st.integers(0, 10**16).map(str),
            st.sampled_from(["0", "0.0", "00.01", "1" + "0" * 15, "1" + "0" * (15 - decimals)]),
        )
    )
    currency = CURRENCY_WITH[decimals]
    in_document = re.fullmatch(rule, text) is not None and len(text) <= 32
    assert in_document == accepted(lambda value: parse_amount(value, currency), text), (text, rule)


@pytest.mark.parametrize(
    ("rule", "check", "alphabet"),
    [
        (ACCOUNT_ID_RULE, check_account_id, st.characters(codec="utf-8")),
        (OWNER_RULE, check_owner, st.characters(codec="utf-8")),
        (UUID_RULE, check_transaction_id, st.sampled_from("0123456789abcdefABCDEFg-{}x \n")),
    ],
)
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_each_text_rule_is_its_check(
    rule: str, check: object, alphabet: st.SearchStrategy[str], data: st.DataObject
) -> None:
    """The document's pattern, read as ECMA-262 reads it (the whole string), is the server's check."""
    text = data.draw(
        st.one_of(
            st.text(alphabet, max_size=80),
            st.from_regex(rule, fullmatch=True),
            st.from_regex(rule, fullmatch=True).map(lambda value: value + "\n"),
        )
    )
    lengths = {ACCOUNT_ID_RULE: 64, OWNER_RULE: 128, UUID_RULE: 36}
    in_document = re.fullmatch(rule, text) is not None and len(text) <= lengths[rule]
    assert in_document == accepted(check, text), (text, rule)


def test_a_trailing_newline_is_refused_though_msgspec_would_let_it_in() -> None:
    """msgspec searches patterns (so `$` lets a final newline in); the domain check refuses it,
    as the document's `^...$` does."""
    body = decode(b'{"account_id": "alice\\n", "owner": "alice", "currency": "USD"}', schemas.NewAccount)
    with pytest.raises(WalletError):
        check_account_id(body.account_id)


def test_every_operation_has_its_handler_and_every_code_its_meaning() -> None:
    assert {op.operation_id for op in openapi.OPERATIONS} == set(HANDLERS) | set(MONEY_HANDLERS)
    assert set(ERROR_STATUS) <= set(ERROR_MEANINGS)
    document = openapi.document()
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            for link in (
                link for answer in operation["responses"].values() for link in answer.get("links", {}).values()
            ):
                assert link["operationId"] in {*HANDLERS, *MONEY_HANDLERS}, (path, method, link)


def test_the_readme_and_the_api_page_name_every_operation_and_every_code() -> None:
    """The operations tables of the README and of docs/api.md list each operation of the
    document, and docs/api.md's codes table each code with its status and its meaning."""
    documented = {(op.method.upper(), op.path.replace("{account_id}", "{id}")) for op in openapi.OPERATIONS}
    documented.add(("GET", "/openapi.json"))  # the document itself, served beside what it describes
    for page in (REPOSITORY / "README.md", REPOSITORY / "docs" / "api.md"):
        first_cells = re.findall(r"^\| (`(?:GET|POST) [^|]*)\|", page.read_text(), flags=re.M)
        listed = {pair for cell in first_cells for pair in re.findall(r"`(GET|POST) (/[^` ?\[]*)", cell)}
        assert listed == documented, (page.name, sorted(listed - documented), sorted(documented - listed))
    api = (REPOSITORY / "docs" / "api.md").read_text()
    rows = re.findall(r"^\| `([a-z_]+)` \| (\d{3}) \| (.*) \|$", api, flags=re.M)
    documented_codes: dict[str, tuple[int, str]] = {
        code: (status, ERROR_MEANINGS[code]) for code, status in ERROR_STATUS.items()
    }
    documented_codes.update({code: (status, ERROR_MEANINGS[code]) for code, status in HTTP_CODES.items()})
    assert {code: (int(status), meaning) for code, status, meaning in rows} == documented_codes


@pytest.mark.parametrize(
    ("body", "code", "detail"),
    [
        (b"[1]", "malformed_request", "request body must be a JSON object"),
        (b"9c\xff\x02", "malformed_request", "request body must be a JSON object"),
        (b'{"account_id": "a", "owner": "o"}', "validation_error", "missing fields: ['currency']"),
        (b'{"account_id": "a", "owner": "o", "currency": "USD", "x": 1}', "validation_error", "unknown fields: ['x']"),
        (b'{"account_id": 5, "owner": "o", "currency": "USD"}', "validation_error", "account_id must be 1-64"),
        (b'{"account_id": "a", "owner": "", "currency": "USD"}', "validation_error", "owner must be 1-128"),
    ],
)
def test_a_refused_body_names_its_field_without_reading_msgspecs_words(body: bytes, code: str, detail: str) -> None:
    """Protects the refusals every request can meet: each kind of refusal (not an object,
    missing, unknown, wrong type, a bound) names its field with the domain's code and sentence,
    whatever msgspec says."""
    with pytest.raises(WalletError) as refused:
        decode(body, schemas.NewAccount)
    assert refused.value.code == code and refused.value.detail.startswith(detail), refused.value.detail


@pytest.mark.parametrize(
    ("body", "code", "detail"),
    [
        (
            b'{"from_account": "a", "to_account": "b", "amount": "1.00", "transaction_id": "x"}',
            "validation_error",
            "missing fields: ['currency']",
        ),
        (
            b'{"from_account": "a", "to_account": "b", "amount": "1.00", "currency": "EUR", "transaction_id": "x"}',
            "validation_error",
            "transaction_id must be a UUID",
        ),
        (
            b'{"from_account": "a", "to_account": "b", "amount": "1.001", "currency": "USD",'
            b' "transaction_id": "6f1d3c2b-8a4e-4f0b-b7d5-1e9c0a2f3b44"}',
            "invalid_amount",
            "USD amounts have at most 2",
        ),
        (
            b'{"from_account": "a", "to_account": "b", "amount": 1, "currency": "USD",'
            b' "transaction_id": "6f1d3c2b-8a4e-4f0b-b7d5-1e9c0a2f3b44"}',
            "invalid_amount",
            "amount must be a decimal",
        ),
        (
            b'{"from_account": "a", "to_account": "b", "amount": "1", "currency": "USD", "mode": "3pc",'
            b' "transaction_id": "6f1d3c2b-8a4e-4f0b-b7d5-1e9c0a2f3b44"}',
            "validation_error",
            "mode must be one of",
        ),
        (
            b'{"from_account": "a", "to_account": "b", "amount": "1", "currency": "ZZZ",'
            b' "transaction_id": "6f1d3c2b-8a4e-4f0b-b7d5-1e9c0a2f3b44"}',
            "unsupported_currency",
            "currency must be",
        ),
    ],
)
def test_a_refused_transfer_names_its_field_per_currency(body: bytes, code: str, detail: str) -> None:
    """The same for the per-currency union of a transfer: the tag (currency) is checked first."""
    with pytest.raises(WalletError) as refused:
        decode(body, schemas.TransferRequest)
    assert refused.value.code == code and refused.value.detail.startswith(detail), refused.value.detail
