"""Money: integer minor units inside, decimal strings at the edge. Never floats."""

from __future__ import annotations

import re
from dataclasses import dataclass

from core.domain.errors import WalletError
from core.domain.limits import AMOUNT_MINOR_DIGITS, AMOUNT_MINOR_MAX

# ISO 4217 minor-unit exponents for the currencies this service accepts.
CURRENCY_DECIMALS: dict[str, int] = {
    "USD": 2,
    "EUR": 2,
    "GBP": 2,
    "CHF": 2,
    "CAD": 2,
    "AUD": 2,
    "CNY": 2,
    "INR": 2,
    "SEK": 2,
    "NOK": 2,
    "DKK": 2,
    "PLN": 2,
    "BRL": 2,
    "MXN": 2,
    "SGD": 2,
    "HKD": 2,
    "JPY": 0,
    "KRW": 0,
    "ISK": 0,
    "CLP": 0,
    "BHD": 3,
    "KWD": 3,
    "JOD": 3,
    "OMR": 3,
    "TND": 3,
}

AMOUNT_TEXT_LENGTH_MAX = 32
# ASCII digits only ([0-9], not \\d), one optional point with digits on both sides.
AMOUNT_PATTERN = re.compile(r"([0-9]+)(?:\.([0-9]+))?\Z")


def amount_rule(decimals: int) -> str:
    """Every amount parse_amount accepts for a currency with these decimals, as one regular
    expression (the OpenAPI document states it per currency; tests/test_contract.py holds
    the two equal): leading zeros allowed, positive, at most `decimals` places, at most
    AMOUNT_MINOR_MAX minor units."""
    assert 0 <= decimals < AMOUNT_MINOR_DIGITS
    whole_digits = AMOUNT_MINOR_DIGITS - decimals  # the maximum is 1 followed by this many zeros
    maximum = "1" + "0" * whole_digits
    if decimals == 0:
        return f"^0*(?:[1-9][0-9]{{0,{whole_digits - 1}}}|{maximum})$"
    fraction = f"(?:\\.[0-9]{{1,{decimals}}})?"
    # A fraction of 1..decimals digits, not all zeros: k leading zeros, a non-zero digit, the rest.
    nonzero = "|".join(f"{'0' * k}[1-9][0-9]{{0,{decimals - 1 - k}}}" for k in range(decimals))
    return f"^0*(?:[1-9][0-9]{{0,{whole_digits - 1}}}{fraction}|0\\.(?:{nonzero})|{maximum}(?:\\.0{{1,{decimals}}})?)$"


def check_currency(currency: object) -> str:
    if not isinstance(currency, str) or currency not in CURRENCY_DECIMALS:
        raise WalletError("unsupported_currency", f"currency must be one of {sorted(CURRENCY_DECIMALS)}")
    return currency


def parse_amount(text: object, currency: str) -> int:
    """'12.34' USD -> 1234. Refuses floats, signs, exponents, too many decimals, zero."""
    decimals = CURRENCY_DECIMALS[check_currency(currency)]
    if not isinstance(text, str):
        raise WalletError("invalid_amount", 'amount must be a decimal string such as "12.34", not a number')
    parts = AMOUNT_PATTERN.match(text) if len(text) <= AMOUNT_TEXT_LENGTH_MAX else None
    if parts is None:
        raise WalletError("invalid_amount", 'amount must be a positive decimal string such as "12.34"')
    whole, fraction = parts.group(1), parts.group(2) or ""
    if len(fraction) > decimals:
        raise WalletError("invalid_amount", f"{currency} amounts have at most {decimals} decimal places")
    # Exact integer arithmetic: the digits, with the fraction padded to the currency's places.
    minor = int(whole + fraction.ljust(decimals, "0"))
    if minor <= 0:
        raise WalletError("invalid_amount", "amount must be greater than zero")
    if minor > AMOUNT_MINOR_MAX:
        raise WalletError("invalid_amount", f"amount must be at most {format_amount(AMOUNT_MINOR_MAX, currency)}")
    return minor


def format_amount(minor: int, currency: str) -> str:
    """1234 USD -> '12.34'; exact for every integer."""
    assert isinstance(minor, int), "minor units are integers"
    decimals = CURRENCY_DECIMALS[currency]
    sign = "-" if minor < 0 else ""
    digits = str(abs(minor)).rjust(decimals + 1, "0")
    if decimals == 0:
        return sign + digits
    return f"{sign}{digits[:-decimals]}.{digits[-decimals:]}"


@dataclass(frozen=True)
class Money:
    minor: int
    currency: str

    def __post_init__(self) -> None:
        assert isinstance(self.minor, int), "Money.minor must be an int of minor units"
        assert self.currency in CURRENCY_DECIMALS, f"unknown currency {self.currency!r}"

    def __str__(self) -> str:
        return format_amount(self.minor, self.currency)
