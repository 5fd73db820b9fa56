"""The limits a user meets, each a named constant, once: the code enforces them, and the
problem texts, the OpenAPI document and the docs state them from here."""

from __future__ import annotations

BODY_BYTES_MAX = 16 * 1024  # one request's body
BATCH_BODY_BYTES_MAX = 512 * 1024  # a batch request's body
TRANSFERS_PER_REQUEST_MAX = 1000  # transfers in one batch request
INFLIGHT_MAX = 100_000  # transaction ids one coordinator works on at once; past it, `overloaded`
# Upper bound on one amount in minor units: far below bigint, far above any real payment.
AMOUNT_MINOR_DIGITS = 15
AMOUNT_MINOR_MAX = 10**AMOUNT_MINOR_DIGITS


def kib(size: int) -> str:
    """16384 -> '16 KiB'."""
    assert size % 1024 == 0, "a size stated in whole KiB"
    return f"{size // 1024} KiB"
