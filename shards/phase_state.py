"""SQL for the phase-state table: one row per unfinished or finished TC/C or Saga transfer, on
its debit shard; the decision (second_phase) is taken under its row lock."""
from __future__ import annotations

from dataclasses import dataclass
import asyncpg

from coordinator.domain.transfers import Transfer
from shards.arrays import bool_array, int_array, nullable_text_array, text_array
from shards.pool import Connection
from shards.transfers import request_hash_sql

# request_hash is written with every row (kept for audit); a retry is compared by its movement.
PHASE_COLUMNS = (
    "transaction_id, mode, from_account, to_account, amount, currency, debit_try, credit_try, "
    "second_phase, second_state, error_code, out_of_order"
)

LOCK_PHASES = f"""
SELECT {PHASE_COLUMNS} FROM phase_state
WHERE transaction_id IN (SELECT id FROM unnest(($1::text)::uuid[]) AS wanted(id))
ORDER BY transaction_id FOR UPDATE
"""
INSERT_PHASES = """
INSERT INTO phase_state (transaction_id, mode, from_account, to_account, amount, currency, request_hash,
                         debit_try, credit_try)
SELECT t.transaction_id, t.mode, t.from_account, t.to_account, t.amount, t.currency, {hash}, 'received', 'sent'
FROM unnest(($1::text)::uuid[], ($2::text)::text[], ($3::text)::text[], ($4::text)::text[], ($5::text)::bigint[],
            ($6::text)::text[]) AS t(transaction_id, mode, from_account, to_account, amount, currency)
""".replace("{hash}", request_hash_sql("t", kind="transfer"))
UPDATE_PHASES = """
UPDATE phase_state AS p
SET second_phase = d.second_phase, second_state = d.second_state, error_code = d.error_code,
    out_of_order = p.out_of_order OR d.out_of_order, updated_at = now()
FROM unnest(($1::text)::uuid[], ($2::text)::text[], ($3::text)::text[], ($4::text)::text[], ($5::text)::boolean[])
     AS d(transaction_id, second_phase, second_state, error_code, out_of_order)
WHERE p.transaction_id = d.transaction_id
"""
SELECT_UNFINISHED = f"""
SELECT {PHASE_COLUMNS} FROM phase_state
WHERE second_state <> 'done' AND updated_at < now() - make_interval(secs => $1::double precision / 1000)
ORDER BY updated_at
LIMIT $2
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
    second_phase: str | None
    second_state: str
    error_code: str | None
    out_of_order: bool


@dataclass(frozen=True)
class PhaseUpdate:
    transaction_id: str
    second_phase: str
    second_state: str
    error_code: str | None
    out_of_order: bool


def phase_from_row(row: asyncpg.Record) -> PhaseRow:
    """From a row of PHASE_COLUMNS, in that order."""
    (transaction_id, mode, from_account, to_account, amount, currency, debit_try, credit_try, second_phase,
     second_state, error_code, out_of_order) = row
    return PhaseRow(Transfer(transaction_id, "transfer", from_account, to_account, amount, currency, mode),
                    debit_try, credit_try, second_phase, second_state, error_code, out_of_order)


async def lock_phases(connection: Connection, transaction_ids: list[str]) -> dict[str, PhaseRow]:
    rows = await connection.fetch(LOCK_PHASES, text_array(sorted(set(transaction_ids))))
    return {row["transaction_id"]: phase_from_row(row) for row in rows}


async def select_phases(connection: Connection, transaction_ids: list[str]) -> dict[str, PhaseRow]:
    rows = await connection.fetch(SELECT_PHASES, text_array(transaction_ids))
    return {row["transaction_id"]: phase_from_row(row) for row in rows}


async def insert_phases(connection: Connection, transfers: list[Transfer]) -> None:
    senders = [t.from_account for t in transfers if t.from_account is not None]
    assert len(senders) == len(transfers), "TC/C and Saga move money between two accounts: never a deposit"
    if transfers:
        await connection.execute(
            INSERT_PHASES,
            text_array([t.transaction_id for t in transfers]), text_array([t.mode for t in transfers]),
            text_array(senders),
            text_array([t.to_account for t in transfers]), int_array([t.amount for t in transfers]),
            text_array([t.currency for t in transfers]),
        )


async def update_phases(connection: Connection, updates: list[PhaseUpdate]) -> None:
    if updates:
        status = await connection.execute(
            UPDATE_PHASES,
            text_array([u.transaction_id for u in updates]), text_array([u.second_phase for u in updates]),
            text_array([u.second_state for u in updates]), nullable_text_array([u.error_code for u in updates]),
            bool_array([u.out_of_order for u in updates]),
        )
        assert status == f"UPDATE {len(updates)}", f"phase update touched {status}, expected {len(updates)} rows"


async def select_unfinished(connection: Connection, older_than_ms: int, limit: int) -> list[PhaseRow]:
    rows = await connection.fetch(SELECT_UNFINISHED, older_than_ms, limit)
    return [phase_from_row(row) for row in rows]


async def mark_done(connection: Connection, transaction_ids: list[str]) -> None:
    await connection.execute(MARK_DONE, text_array(transaction_ids))
