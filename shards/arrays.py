"""Array parameters as one text literal each: the hot batch statements' encoding.

asyncpg encodes a list parameter element by element and asks several abstract base
classes about every element: about 0.32 µs of CPU per element here, some 40 elements per
transfer. A text literal (`{"a","b"}`, `{1,2}`) built with str.join costs 0.04 µs per text
element and 0.12 µs per integer, and the server casts it back (`($1::text)::bigint[]`):
about 10% of the coordinator's CPU per transfer on the batch path. It is still one bind
parameter: no value is ever spliced into SQL.

Only for values the coordinator itself validated: account ids and transaction ids (UUIDs
in canonical text; core/domain/validation.py), currencies and its own vocabulary
words. A double quote or backslash would change the literal's meaning, so they are refused
whole, as is NULL where none is allowed; the server's cast checks every element's type.
Bytes keep asyncpg's binary encoding.

A literal is unnested in FROM (`IN (SELECT id FROM unnest(($1::text)::uuid[]) ...)`), where it
is cast once per statement, never compared by `= ANY(($1::text)::uuid[])` in a WHERE: a
generic plan that scans a table (one planned while it was small) casts such an expression
again for every row it reads, and the statement grows with the table
(tests/test_hot_path.py keeps every statement so).
"""

from __future__ import annotations

from collections.abc import Sequence

_SEPARATOR = "\x1f"  # a control character: never in a validated id or word


def text_array(values: Sequence[str]) -> str:
    """`{"v1","v2"}` for non-empty strings without quotes, backslashes or control characters."""
    if not values:
        return "{}"
    joined = _SEPARATOR.join(values)
    assert '"' not in joined and "\\" not in joined and joined.count(_SEPARATOR) == len(values) - 1, (
        "text_array takes validated ids and words only"
    )
    return '{"' + joined.replace(_SEPARATOR, '","') + '"}'


def nullable_text_array(values: Sequence[str | None]) -> str:
    """As text_array, with None as NULL."""
    parts = ["NULL" if value is None else '"' + value + '"' for value in values]
    joined = ",".join(parts)
    assert "\\" not in joined and joined.count('"') == 2 * (len(parts) - parts.count("NULL")), (
        "nullable_text_array takes validated ids and words only"
    )
    return "{" + joined + "}"


def int_array(values: Sequence[int]) -> str:
    """`{1,-2,3}` for Python ints (a float or a bool fails here or on the server, loudly)."""
    return "{" + ",".join(map(int.__repr__, values)) + "}"


def bool_array(values: Sequence[bool]) -> str:
    """`{t,f}`; anything but a bool is refused."""
    assert all(value is True or value is False for value in values), "bool_array takes bools only"
    return "{" + ",".join(["t" if value else "f" for value in values]) + "}"
