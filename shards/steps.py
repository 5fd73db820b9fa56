"""SQL for one local step of TC/C or Saga on one shard, in two statements: everything the step
reads (its accounts and phase-state rows locked, its records and barrier rows), then
everything it writes (barrier rows, phase state opened or moved on, and the batch write of
shards/transfers.py: balances, records, outbox rows).

Each was four and three statements, one round trip each, inside the step's transaction: a
lone TC/C transfer ran 33 statements in 31 round trips in a row, now 21 in 16
(docs/figures.md). The statements themselves are unchanged (the same rows, locks and
checks); they travel together.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import NamedTuple

import asyncpg

from core.domain.accounts import Account
from core.domain.postings import AccountChange, BalanceEvent
from core.domain.transfers import RecordColumns, Transfer, TransferResult
from shards.accounts import ACCOUNT_COLUMNS, account_from_row
from shards.arrays import bool_array, int_array, nullable_text_array, text_array
from shards.errors import AccountsMoved
from shards.phase_state import PHASE_COLUMNS, PhaseRow, PhaseUpdate, phase_from_row
from shards.pool import Connection
from shards.transfers import (
    RESULT_COLUMNS,
    WRITE_COUNTS,
    WRITE_CTES,
    checked_write,
    request_hash_sql,
    result_from_row,
    write_arguments,
)

# Inside a row of rows, values travel in binary: ids go as text, as the pools carry them
# (shards/pool.py's uuid codec is for columns of their own).
_AS_TEXT = "transaction_id::text AS transaction_id"

# $1 the accounts to lock; $2 the step's transaction ids; $3 lock their phase-state rows too;
# $4 read their records too. Accounts are locked before phase-state rows, in the order every
# step and recovery use (the account CTE is read first, and the phase CTE waits for it).
READ_STEP = f"""
WITH locked AS (
    SELECT {ACCOUNT_COLUMNS}, placement FROM accounts
    WHERE account_id IN (SELECT id FROM unnest(($1::text)::text[]) AS wanted(id))
    ORDER BY account_id
    FOR UPDATE
), phases AS (
    SELECT {PHASE_COLUMNS.replace("transaction_id", _AS_TEXT, 1)} FROM phase_state
    WHERE $3::boolean AND (SELECT count(*) FROM locked) >= 0
      AND transaction_id IN (SELECT id FROM unnest(($2::text)::uuid[]) AS wanted(id))
    ORDER BY phase_state.transaction_id
    FOR UPDATE
)
SELECT (SELECT array_agg(locked) FROM locked) AS accounts,
       (SELECT array_agg(phases) FROM phases) AS phases,
       (SELECT array_agg(found) FROM (
            SELECT {RESULT_COLUMNS.replace("transaction_id", _AS_TEXT, 1)} FROM transfers
            WHERE $4::boolean AND transaction_id IN (SELECT id FROM unnest(($2::text)::uuid[]) AS wanted(id))) AS found
       ) AS records,
       (SELECT array_agg(marked) FROM (
            SELECT {_AS_TEXT}, branch, operation, origin FROM barrier
            WHERE transaction_id IN (SELECT id FROM unnest(($2::text)::uuid[]) AS wanted(id))) AS marked
       ) AS barrier
"""

# WRITE_CTES ($1..$25) and: barrier rows ($26..$29; no ON CONFLICT: a duplicate racing us
# fails the step, which retries and sees the row), phase-state rows opened ($30..$35) and
# moved on ($36..$40).
WRITE_STEP = f"""
WITH {WRITE_CTES}, marked AS (
    INSERT INTO barrier (transaction_id, branch, operation, origin)
    SELECT * FROM unnest(($26::text)::uuid[], ($27::text)::text[], ($28::text)::text[], ($29::text)::text[])
    RETURNING 1
), opened AS (
    INSERT INTO phase_state (transaction_id, mode, from_account, to_account, amount, currency, request_hash,
                             debit_try, credit_try)
    SELECT p.transaction_id, p.mode, p.from_account, p.to_account, p.amount, p.currency, {{hash}}, 'received', 'sent'
    FROM unnest(($30::text)::uuid[], ($31::text)::text[], ($32::text)::text[], ($33::text)::text[],
                ($34::text)::bigint[], ($35::text)::text[]) AS p(transaction_id, mode, from_account, to_account, amount,
                                                                 currency)
    RETURNING 1
), advanced AS (
    UPDATE phase_state AS p
    SET second_phase = d.second_phase, second_state = d.second_state, error_code = d.error_code,
        out_of_order = p.out_of_order OR d.out_of_order, updated_at = now()
    FROM unnest(($36::text)::uuid[], ($37::text)::text[], ($38::text)::text[], ($39::text)::text[],
                ($40::text)::boolean[]) AS d(transaction_id, second_phase, second_state, error_code, out_of_order)
    WHERE p.transaction_id = d.transaction_id
    RETURNING 1
)
SELECT {WRITE_COUNTS}, (SELECT count(*) FROM marked) AS marked, (SELECT count(*) FROM opened) AS opened,
       (SELECT count(*) FROM advanced) AS advanced
""".replace("{hash}", request_hash_sql("p", kind="transfer"))

BarrierRow = tuple[str, str, str, str]  # (transaction id, branch, operation, origin)


class StepRead(NamedTuple):
    accounts: dict[str, Account]
    phases: dict[str, PhaseRow]
    records: dict[str, TransferResult]
    barrier: dict[tuple[str, str, str], str]


async def read_step(
    connection: Connection,
    account_ids: list[str],
    transaction_ids: list[str],
    phases: bool = False,
    records: bool = False,
) -> StepRead:
    """Lock the accounts (and, with `phases`, the phase-state rows) of a step; read its barrier
    rows (and, with `records`, its records). AccountsMoved if an account left this shard."""
    row = await connection.fetchrow(
        READ_STEP, text_array(sorted(set(account_ids))), text_array(sorted(set(transaction_ids))), phases, records
    )
    assert row is not None, "a step's read is one row"
    locked: list[asyncpg.Record] = row["accounts"] or []
    gone = [account[0] for account in locked if account[7] != "live"]
    if gone:
        raise AccountsMoved(gone)
    return StepRead(
        {account[0]: account_from_row(account) for account in locked},
        {phase[0]: phase_from_row(phase) for phase in row["phases"] or []},
        {record[0]: result_from_row(record) for record in row["records"] or []},
        {(mark[0], mark[1], mark[2]): mark[3] for mark in row["barrier"] or []},
    )


async def write_step(
    connection: Connection,
    changes: dict[str, AccountChange],
    records: RecordColumns,
    events: list[BalanceEvent],
    barrier: Sequence[BarrierRow],
    opened: Sequence[Transfer] = (),
    advanced: Sequence[PhaseUpdate] = (),
) -> datetime:
    """Everything a step writes, in its transaction; the records' created_at."""
    senders = [t.from_account for t in opened if t.from_account is not None]
    assert len(senders) == len(opened), "TC/C and Saga move money between two accounts: never a deposit"
    marks = list(zip(*barrier, strict=True)) if barrier else [(), (), (), ()]
    row = await connection.fetchrow(
        WRITE_STEP,
        *write_arguments(changes, records, events, None),
        text_array(marks[0]),
        text_array(marks[1]),
        text_array(marks[2]),
        text_array(marks[3]),
        text_array([t.transaction_id for t in opened]),
        text_array([t.mode for t in opened]),
        text_array(senders),
        text_array([t.to_account for t in opened]),
        int_array([t.amount for t in opened]),
        text_array([t.currency for t in opened]),
        text_array([u.transaction_id for u in advanced]),
        text_array([u.second_phase for u in advanced]),
        text_array([u.second_state for u in advanced]),
        nullable_text_array([u.error_code for u in advanced]),
        bool_array([u.out_of_order for u in advanced]),
    )
    created_at = checked_write(row, changes, records, events, None)
    assert row is not None
    assert row["marked"] == len(barrier), f"step wrote {row['marked']} barrier rows, planned {len(barrier)}"
    assert row["opened"] == len(opened), f"step opened {row['opened']} phase rows, planned {len(opened)}"
    assert row["advanced"] == len(advanced), f"step moved {row['advanced']} phase rows on, planned {len(advanced)}"
    return created_at
