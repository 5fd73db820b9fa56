"""SQL for two-phase commit: prepared transactions and commit decisions. A batch id is a
UUID in its canonical text (lower case), as in the gid."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from shards.pool import Connection

GID_PREFIX = "wallet:2pc:"
# wallet:2pc:<batch uuid>:<decision shard>:<branch shard>. The gid names the batch and
# both shards, so recovery finds the decision from the prepared transaction alone.
GID_PATTERN = re.compile(
    r"^wallet:2pc:(?P<batch>[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})"
    r":(?P<decision>[a-z][a-z0-9_]{0,62}):(?P<branch>[a-z][a-z0-9_]{0,62})$"
)
UNDEFINED_OBJECT = "42704"  # COMMIT/ROLLBACK PREPARED of a gid that is already finished
BUSY = "55000"  # another session is finishing this gid right now (coordinator and recovery racing)
FINISHED_ELSEWHERE = frozenset({UNDEFINED_OBJECT, BUSY})

INSERT_DECISION = "INSERT INTO commit_decisions (batch_id, outcome) VALUES ($1, $2)"
INSERT_DECISION_IF_NONE = """
INSERT INTO commit_decisions (batch_id, outcome) VALUES ($1, $2)
ON CONFLICT (batch_id) DO NOTHING
"""
SELECT_DECISIONS = "SELECT batch_id, outcome FROM commit_decisions WHERE batch_id = ANY($1::uuid[])"
# Decisions older than the retention whose batch has no prepared branch anywhere ($2: the
# batches that still have one), a bounded number per call.
PRUNE_DECISIONS = """
DELETE FROM commit_decisions WHERE batch_id IN (
    SELECT batch_id FROM commit_decisions
    WHERE decided_at < now() - make_interval(secs => $1) AND NOT (batch_id = ANY($2::uuid[]))
    ORDER BY decided_at LIMIT $3
)
"""
SELECT_PREPARED = """
SELECT gid, prepared, (extract(epoch FROM now() - prepared) * 1000)::bigint AS age_ms
FROM pg_prepared_xacts
WHERE database = current_database() AND gid LIKE 'wallet:2pc:%'
ORDER BY prepared
"""


@dataclass(frozen=True)
class PreparedBranch:
    gid: str
    batch_id: str
    decision_shard: str
    branch_shard: str
    prepared_at: datetime
    age_ms: int


def make_gid(batch_id: str, decision_shard: str, branch_shard: str) -> str:
    gid = f"{GID_PREFIX}{batch_id}:{decision_shard}:{branch_shard}"
    assert GID_PATTERN.match(gid), f"gid {gid!r} must match {GID_PATTERN.pattern}"
    return gid


def _quoted_gid(gid: str) -> str:
    # PREPARE TRANSACTION and COMMIT/ROLLBACK PREPARED take no bind parameters: the gid
    # must be a literal. It is only ever a validated uuid and two shard names.
    assert GID_PATTERN.match(gid), f"refusing to put {gid!r} into SQL: not a wallet gid"
    return "'" + gid + "'"


async def begin(connection: Connection, lock_timeout_ms: int | None = None) -> None:
    """A transaction; with `lock_timeout_ms`, one whose lock waits end sooner than the session's
    (in the same round trip: a simple query of two statements, no value from outside)."""
    if lock_timeout_ms is None:
        await connection.execute("BEGIN ISOLATION LEVEL READ COMMITTED")
        return
    assert isinstance(lock_timeout_ms, int) and lock_timeout_ms > 0, "a lock timeout is a positive whole number"
    await connection.execute(f"BEGIN ISOLATION LEVEL READ COMMITTED; SET LOCAL lock_timeout = '{lock_timeout_ms}ms'")


async def prepare(connection: Connection, gid: str) -> None:
    await connection.execute(f"PREPARE TRANSACTION {_quoted_gid(gid)}")


async def commit(connection: Connection) -> None:
    await connection.execute("COMMIT")


async def rollback(connection: Connection) -> None:
    if connection.is_in_transaction():
        await connection.execute("ROLLBACK")


async def commit_prepared(connection: Connection, gid: str) -> bool:
    """True if this call committed it; False if it was already finished or another session
    is finishing it (the decision is fixed, so they finish it the same way)."""
    try:
        await connection.execute(f"COMMIT PREPARED {_quoted_gid(gid)}")
        return True
    except asyncpg.PostgresError as error:
        if getattr(error, "sqlstate", None) in FINISHED_ELSEWHERE:
            return False
        raise


async def rollback_prepared(connection: Connection, gid: str) -> bool:
    try:
        await connection.execute(f"ROLLBACK PREPARED {_quoted_gid(gid)}")
        return True
    except asyncpg.PostgresError as error:
        if getattr(error, "sqlstate", None) in FINISHED_ELSEWHERE:
            return False
        raise


async def insert_decision(connection: Connection, batch_id: str, outcome: str) -> None:
    """Raises UniqueViolationError if a decision exists (recovery fenced this batch)."""
    assert outcome in ("commit", "abort")
    await connection.execute(INSERT_DECISION, batch_id, outcome)


async def decide_unless_decided(connection: Connection, batch_id: str, outcome: str) -> str:
    """Record `outcome` if no decision exists yet; return the decision that stands. Blocks
    behind a coordinator's uncommitted decision until it commits or rolls back."""
    assert outcome in ("commit", "abort")
    await connection.execute(INSERT_DECISION_IF_NONE, batch_id, outcome)
    stands: str = await connection.fetchval("SELECT outcome FROM commit_decisions WHERE batch_id = $1", batch_id)
    return stands


async def select_decisions(connection: Connection, batch_ids: list[str]) -> dict[str, str]:
    rows = await connection.fetch(SELECT_DECISIONS, batch_ids)
    return {row["batch_id"]: row["outcome"] for row in rows}


async def prune_decisions(connection: Connection, older_than_s: int, keep: list[str], limit: int) -> int:
    status = await connection.execute(PRUNE_DECISIONS, older_than_s, keep, limit)
    return int(status.split()[-1])


async def select_prepared(connection: Connection) -> list[PreparedBranch]:
    branches = []
    for row in await connection.fetch(SELECT_PREPARED):
        match = GID_PATTERN.match(row["gid"])
        if match is None:
            continue  # not ours: never touch another application's prepared transactions
        branches.append(
            PreparedBranch(
                gid=row["gid"],
                batch_id=match["batch"],
                decision_shard=match["decision"],
                branch_shard=match["branch"],
                prepared_at=row["prepared"],
                age_ms=row["age_ms"],
            )
        )
    return branches
