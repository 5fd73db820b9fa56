"""What an operator's alerts read of a ledger server, and the verification record they read.

  last_appended        when the relay last appended to each live stream: with the outbox's
                       lag, it tells a relay that is behind from one that has stopped
  record_verification  a verification's result on one server (`wallet ledger verify`, and the
                       relay's periodic one), one row per run (ledger_verifications)
  latest_verification  the newest of those rows

Each is one statement on a primary key or an index: `/metrics` asks them at every scrape.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from shards.pool import Connection

LAST_APPENDED = """
SELECT h.stream, extract(epoch FROM e.recorded_at)::float8 AS appended_at
FROM ledger_heads h JOIN ledger_events e ON e.stream = h.stream AND e.position = h.position
WHERE h.stream = ANY($1::text[]) AND h.state = 'live'
"""
INSERT_VERIFICATION = "INSERT INTO ledger_verifications (events, breaks, rewrites) VALUES ($1, $2, $3)"
LATEST_VERIFICATION = """
SELECT extract(epoch FROM finished_at)::float8 AS finished_at, events, breaks, rewrites
FROM ledger_verifications ORDER BY verification_id DESC LIMIT 1
"""


@dataclass(frozen=True)
class Verification:
    finished_at_s: float  # Unix time
    events: int
    breaks: int
    rewrites: int

    @property
    def ok(self) -> bool:
        return self.breaks == 0 and self.rewrites == 0


async def last_appended(connection: Connection, streams: Sequence[str]) -> dict[str, float]:
    """stream -> Unix time its newest event was appended (a stream with no event yet: absent)."""
    rows = await connection.fetch(LAST_APPENDED, list(streams))
    return {row["stream"]: row["appended_at"] for row in rows}


async def record_verification(connection: Connection, events: int, breaks: int, rewrites: int) -> None:
    assert events >= 0 and breaks >= 0 and rewrites >= 0, "a verification counts, it never subtracts"
    await connection.execute(INSERT_VERIFICATION, events, breaks, rewrites)


async def latest_verification(connection: Connection) -> Verification | None:
    row = await connection.fetchrow(LATEST_VERIFICATION)
    if row is None:
        return None
    return Verification(row["finished_at"], row["events"], row["breaks"], row["rewrites"])
