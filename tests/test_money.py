"""Pure tests of amount parsing and formatting: integer minor units, decimal strings at the edge."""

from __future__ import annotations

from typing import Any

import pytest

from core.domain.errors import WalletError
from core.domain.limits import AMOUNT_MINOR_MAX
from core.domain.money import (
    AMOUNT_TEXT_LENGTH_MAX,
    CURRENCY_DECIMALS,
    Money,
    check_currency,
    format_amount,
    parse_amount,
)


def refusal_code(text: Any, currency: Any) -> str:
    with pytest.raises(WalletError) as caught:
        parse_amount(text, currency)
    return caught.value.code


# --- parse_amount: accepted --------------------------------------------------


@pytest.mark.parametrize(
    ("text", "currency", "minor"),
    [
        ("12.34", "USD", 1234),
        ("12.3", "USD", 1230),
        ("12", "USD", 1200),
        ("0.01", "USD", 1),
        ("0.1", "USD", 10),
        ("1000000", "USD", 100_000_000),
        ("007.50", "USD", 750),
        ("1", "JPY", 1),
        ("500", "JPY", 500),
        ("123456", "JPY", 123_456),
        ("1.234", "BHD", 1234),
        ("0.001", "BHD", 1),
        ("1.5", "BHD", 1500),
        ("7", "BHD", 7000),
    ],
)
def test_parse_amount_accepts_decimal_strings(text: str, currency: str, minor: int) -> None:
    """Protects the exact decimal-string -> minor-units conversion for 0, 2 and 3 decimal currencies."""
    assert parse_amount(text, currency) == minor
    assert isinstance(parse_amount(text, currency), int)


def test_parse_amount_accepts_the_maximum() -> None:
    """Protects the upper bound being inclusive."""
    assert parse_amount("10000000000000.00", "USD") == AMOUNT_MINOR_MAX
    assert parse_amount(str(AMOUNT_MINOR_MAX), "JPY") == AMOUNT_MINOR_MAX
    assert parse_amount("1000000000000.000", "BHD") == AMOUNT_MINOR_MAX


def test_parse_amount_accepts_text_at_the_length_limit() -> None:
    """Protects the text length bound being inclusive (leading zeros count)."""
    text = "1.00".rjust(AMOUNT_TEXT_LENGTH_MAX, "0")
    assert len(text) == AMOUNT_TEXT_LENGTH_MAX
    assert parse_amount(text, "USD") == 100


# --- parse_amount: refused ---------------------------------------------------


@pytest.mark.parametrize("value", [12.34, 12.0, 1, 0, True, None, b"12.34", ["12.34"]])
def test_parse_amount_refuses_non_strings(value: Any) -> None:
    """Protects against floats and ints sneaking in as money."""
    with pytest.raises(WalletError) as caught:
        parse_amount(value, "USD")
    assert caught.value.code == "invalid_amount"
    assert caught.value.status == 422
    assert "not a number" in caught.value.detail


@pytest.mark.parametrize(
    ("text", "currency"),
    [
        ("-1", "USD"),
        ("-0.01", "USD"),
        ("0", "USD"),
        ("0.00", "USD"),
        ("000", "JPY"),
        ("0.000", "BHD"),
        ("1e5", "USD"),
        ("1E5", "JPY"),
        ("1.234", "USD"),
        ("1.230", "USD"),
        ("1.5", "JPY"),
        ("1.2345", "BHD"),
        ("1.", "USD"),
        (".5", "USD"),
        (".", "USD"),
        ("+1", "USD"),
        (" 1", "USD"),
        ("1 ", "USD"),
        ("1\n", "USD"),
        ("1,00", "USD"),
        ("1_000", "USD"),
        ("1..2", "USD"),
        ("1.2.3", "USD"),
        ("", "USD"),
        ("١٢", "USD"),  # Arabic-Indic digits
        ("１２", "JPY"),  # full-width digits
        ("²", "USD"),  # superscript: isdigit() but not a decimal digit
        ("12\u0660", "USD"),  # ASCII mixed with a non-ASCII digit
        ("NaN", "USD"),
        ("Infinity", "USD"),
        ("0x10", "USD"),
        ("1" * (AMOUNT_TEXT_LENGTH_MAX + 1), "JPY"),
        ("1.00".rjust(AMOUNT_TEXT_LENGTH_MAX + 1, "0"), "USD"),
        ("10000000000000.01", "USD"),
        (str(AMOUNT_MINOR_MAX + 1), "JPY"),
        ("1000000000000.001", "BHD"),
        ("99999999999999999999", "USD"),
    ],
)
def test_parse_amount_refuses_invalid_amounts(text: str, currency: str) -> None:
    """Protects input validation: signs, zero, exponents, extra decimals, odd digits, oversize."""
    assert refusal_code(text, currency) == "invalid_amount"


def test_parse_amount_names_the_decimal_places() -> None:
    """Protects a helpful message for too many decimal places."""
    with pytest.raises(WalletError, match="USD amounts have at most 2 decimal places"):
        parse_amount("1.234", "USD")
    with pytest.raises(WalletError, match="JPY amounts have at most 0 decimal places"):
        parse_amount("1.5", "JPY")


def test_parse_amount_names_the_maximum() -> None:
    """Protects a helpful message for an amount above the maximum."""
    with pytest.raises(WalletError, match="at most 10000000000000.00"):
        parse_amount("10000000000000.01", "USD")


@pytest.mark.parametrize("currency", ["usd", "XXX", "", "US", "USDT", None, 840, "BTC"])
def test_parse_amount_refuses_unsupported_currency(currency: Any) -> None:
    """Protects the currency list: unknown or mis-cased codes are refused with their own code."""
    with pytest.raises(WalletError) as caught:
        parse_amount("12.34", currency)
    assert caught.value.code == "unsupported_currency"
    assert caught.value.status == 422


def test_currency_is_checked_before_amount() -> None:
    """Protects the error precedence: a bad currency is reported even with a bad amount."""
    assert refusal_code(1.5, "XXX") == "unsupported_currency"


def test_check_currency_returns_known_codes() -> None:
    """Protects check_currency passing every supported code through unchanged."""
    for currency in CURRENCY_DECIMALS:
        assert check_currency(currency) == currency


# --- format_amount -----------------------------------------------------------


@pytest.mark.parametrize(
    ("minor", "currency", "text"),
    [
        (1234, "USD", "12.34"),
        (1, "USD", "0.01"),
        (10, "USD", "0.10"),
        (100, "USD", "1.00"),
        (0, "USD", "0.00"),
        (-1234, "USD", "-12.34"),
        (-5, "USD", "-0.05"),
        (0, "JPY", "0"),
        (7, "JPY", "7"),
        (-7, "JPY", "-7"),
        (1, "BHD", "0.001"),
        (1234, "BHD", "1.234"),
        (1000, "BHD", "1.000"),
        (-1, "BHD", "-0.001"),
        (0, "BHD", "0.000"),
        (AMOUNT_MINOR_MAX, "USD", "10000000000000.00"),
        (10**30 + 1, "USD", "10000000000000000000000000000.01"),
    ],
)
def test_format_amount_is_exact(minor: int, currency: str, text: str) -> None:
    """Protects exact formatting with the currency's decimal places, zero and negatives included."""
    assert format_amount(minor, currency) == text


ROUND_TRIP_MINORS = [
    1,
    2,
    9,
    10,
    11,
    99,
    100,
    101,
    999,
    1000,
    1001,
    12345,
    100000,
    123456789,
    10**12,
    10**15 - 1,
    AMOUNT_MINOR_MAX,
]


@pytest.mark.parametrize("currency", sorted(CURRENCY_DECIMALS))
def test_format_then_parse_round_trips(currency: str) -> None:
    """Protects that every formatted positive amount parses back to the same minor units."""
    for minor in ROUND_TRIP_MINORS:
        assert parse_amount(format_amount(minor, currency), currency) == minor


@pytest.mark.parametrize("currency", ["USD", "JPY", "BHD"])
def test_negative_format_mirrors_positive(currency: str) -> None:
    """Protects negative formatting (balances deltas, refunds): a leading minus, same digits."""
    for minor in ROUND_TRIP_MINORS:
        assert format_amount(-minor, currency) == "-" + format_amount(minor, currency)
        # The API refuses signed input, so a negative never parses back.
        assert refusal_code(format_amount(-minor, currency), currency) == "invalid_amount"


def test_format_amount_refuses_non_integers() -> None:
    """Protects against formatting floats as money."""
    with pytest.raises(AssertionError):
        format_amount(12.34, "USD")  # type: ignore[arg-type]  # the wrong type, on purpose


def test_money_str_formats_and_refuses_floats() -> None:
    """Protects the Money value: int minor units, known currency, formatted by str()."""
    assert str(Money(1234, "USD")) == "12.34"
    assert str(Money(5, "BHD")) == "0.005"
    with pytest.raises(AssertionError):
        Money(12.34, "USD")  # type: ignore[arg-type]  # the wrong type, on purpose
    with pytest.raises(AssertionError):
        Money(1, "XXX")


@pytest.mark.parametrize("account_id", ["abc\n", "abc\r\n", "-lead", "", "a" * 65, "sp ace", "ünï", "a\x1fb"])
def test_account_ids_are_refused_whole(account_id: str) -> None:
    """Protects ids end to end: a trailing newline (which `$` would let through) or any other
    character outside the documented set is refused, not stored."""
    from core.domain.validation import check_account_id

    with pytest.raises(WalletError) as refused:
        check_account_id(account_id)
    assert refused.value.code == "validation_error"
