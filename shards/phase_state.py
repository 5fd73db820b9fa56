"""SQL for the phase-state table: one row per unfinished or finished TC/C or Saga transfer, on
its debit shard; the decision (second_phase) is taken under its row lock."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import asyncpg

from core.domain.branch_plan import SecondPhase
from core.domain.errors import RecordedCode
from core.domain.transfers import Transfer
from shards.arrays import text_array
from shards.pool import Connection

# Where the second phase stands: sent to the credit side, or done on both.
SecondState = Literal["sent", "done"]

# request_hash is written with every row (kept for audit); a retry is compared by its movement.
PHASE_COLUMNS = (
    "transaction_id, mode, from_account, to_account, amount, currency, debit_try, credit_try, "
    "second_phase, second_state, error_code, out_of_order"
)

SELECT_UNFINISHED = f"""
SELECT {PHASE_COLUMNS} FROM phase_state
WHERE second_state <> 'done' AND updated_at < now() - make_interval(secs => $1::double precision / 1000)
ORDER BY updated_at
LIMIT $2
"""
# Per mode, how many unfinished transfers and how old (ms, since created) the oldest is; over
# at most $1 of them, the least recently moved first (the partial index's order), so a
# scrape stays cheap however many there are.
UNFINISHED_AGES = """
SELECT mode, count(*) AS transfers, (extract(epoch FROM now() - min(created_at)) * 1000)::bigint AS oldest_ms
FROM (SELECT mode, created_at FROM phase_state WHERE second_state <> 'done' ORDER BY updated_at LIMIT $1) AS unfinished
GROUP BY mode
"""
SELECT_PHASES = f"""
SELECT {PHASE_COLUMNS} FROM phase_state
WHERE transaction_id IN (SELECT id FROM unnest(($1::text)::uuid[]) AS wanted(id))
"""
MARK_DONE = """
UPDATE phase_state SET second_state = 'done', updated_at = now()
WHERE transaction_id IN (SELECT id FROM unnest(($1::text)::uuid[]) AS wanted(id))
  AND second_phase IS NOT NULL AND second_state <> 'done'
"""


@dataclass(frozen=True)
class PhaseRow:
    transfer: Transfer
    debit_try: str
    credit_try: str
    second_phase: SecondPhase | None
    second_state: SecondState
    error_code: RecordedCode | None
    out_of_order: bool


@dataclass(frozen=True)
class PhaseUpdate:
    transaction_id: str
    second_phase: SecondPhase
    second_state: SecondState
    error_code: RecordedCode | None
    out_of_order: bool


def phase_from_row(row: asyncpg.Record) -> PhaseRow:
    """From a row of PHASE_COLUMNS, in that order."""
    (
        transaction_id,
        mode,
        from_account,
        to_account,
        amount,
        currency,
        debit_try,
        credit_try,
        second_phase,
        second_state,
        error_code,
        out_of_order,
    ) = row
    return PhaseRow(
        Transfer(transaction_id, "transfer", from_account, to_account, amount, currency, mode),
        debit_try,
        credit_try,
        second_phase,
        second_state,
        error_code,
        out_of_order,
    )


async def select_phases(connection: Connection, transaction_ids: list[str]) -> dict[str, PhaseRow]:
    rows = await connection.fetch(SELECT_PHASES, text_array(transaction_ids))
    return {row["transaction_id"]: phase_from_row(row) for row in rows}


async def select_unfinished(connection: Connection, older_than_ms: int, limit: int) -> list[PhaseRow]:
    rows = await connection.fetch(SELECT_UNFINISHED, older_than_ms, limit)
    return [phase_from_row(row) for row in rows]


async def unfinished_ages(connection: Connection, limit: int) -> dict[str, tuple[int, int]]:
    """mode -> (unfinished transfers, age of the oldest in ms); a mode with none is absent."""
    rows = await connection.fetch(UNFINISHED_AGES, limit)
    return {row["mode"]: (row["transfers"], row["oldest_ms"]) for row in rows}


async def mark_done(connection: Connection, transaction_ids: list[str]) -> None:
    await connection.execute(MARK_DONE, text_array(transaction_ids))
