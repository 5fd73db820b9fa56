"""SQL for transfer records (the idempotency table) and batched balance changes."""
from __future__ import annotations

from datetime import datetime
from uuid import UUID

import asyncpg

from coordinator.domain.batch_plan import StoredTransfer
from coordinator.domain.transfers import Transfer, TransferResult
from coordinator.domain.postings import AccountChange, BalanceEvent
from shards.arrays import int_array, nullable_text_array, text_array
from shards.pool import Connection

TRANSFER_COLUMNS = (
    "transaction_id, kind, from_account, to_account, amount, currency, mode, "
    "protocol, status, phase, error_code, request_hash, created_at"
)

SELECT_TRANSFERS = f"SELECT {TRANSFER_COLUMNS} FROM transfers WHERE transaction_id = ANY($1::uuid[])"

# The whole write side of a batch on one shard in one round trip: folded account
# changes (one row update per account, however many transfers touch it), one record
# per new transfer, one outbox row per balance change. The counts come back so the
# caller can assert all three landed whole. Text and integer columns travel as one
# literal each (shards/arrays.py).
WRITE_BATCH = """
WITH moved AS (
    UPDATE accounts AS a
    SET balance = a.balance + d.delta, reserved = a.reserved + d.reserved_delta,
        version = a.version + d.versions, updated_at = now()
    FROM unnest(($1::text)::text[], ($2::text)::bigint[], ($3::text)::bigint[], ($4::text)::bigint[]) AS d(account_id, delta, reserved_delta, versions)
    WHERE a.account_id = d.account_id
    RETURNING 1
), recorded AS (
    INSERT INTO transfers (transaction_id, kind, from_account, to_account, amount, currency,
                           mode, protocol, status, phase, error_code, request_hash)
    SELECT * FROM unnest($5::uuid[], ($6::text)::text[], ($7::text)::text[], ($8::text)::text[],
                         ($9::text)::bigint[], ($10::text)::text[], ($11::text)::text[], ($12::text)::text[],
                         ($13::text)::text[], ($14::text)::text[], ($15::text)::text[], $16::bytea[])
    RETURNING 1
), evented AS (
    INSERT INTO outbox (transaction_id, account_id, version, kind, amount, reserved_delta,
                        balance_after, reserved_after, currency)
    SELECT * FROM unnest($17::uuid[], ($18::text)::text[], ($19::text)::bigint[], ($20::text)::text[],
                         ($21::text)::bigint[], ($22::text)::bigint[], ($23::text)::bigint[], ($24::text)::bigint[],
                         ($25::text)::text[])
    RETURNING 1
)
SELECT (SELECT count(*) FROM moved) AS moved, (SELECT count(*) FROM recorded) AS recorded,
       (SELECT count(*) FROM evented) AS evented, now() AS created_at
"""


def stored_from_row(row: asyncpg.Record) -> StoredTransfer:
    transfer = Transfer(
        transaction_id=row["transaction_id"],
        kind=row["kind"],
        from_account=row["from_account"],
        to_account=row["to_account"],
        amount=row["amount"],
        currency=row["currency"],
        mode=row["mode"],
    )
    result = TransferResult(
        transfer=transfer,
        status=row["status"],
        error_code=row["error_code"],
        protocol=row["protocol"],
        phase=row["phase"],
        created_at=row["created_at"],
    )
    return StoredTransfer(request_hash=bytes(row["request_hash"]), result=result)


async def select_transfers(connection: Connection, transaction_ids: list[UUID]) -> dict[UUID, StoredTransfer]:
    rows = await connection.fetch(SELECT_TRANSFERS, transaction_ids)
    return {row["transaction_id"]: stored_from_row(row) for row in rows}


async def write_batch(
    connection: Connection,
    changes: dict[str, AccountChange],
    results: list[TransferResult],
    events: list[BalanceEvent],
) -> datetime:
    """Write a planned batch (or one shard's part of it). Must run inside the transaction
    that locked the accounts. Returns the records' created_at (the transaction's start:
    one value per batch)."""
    account_ids = sorted(changes)
    transfers = [result.transfer for result in results]
    # Events are tuples in the outbox's column order ($17..$25): one transpose gives the columns.
    (event_ids, event_accounts, versions, kinds, amounts, reserved_deltas, balances_after, reserved_after,
     currencies) = zip(*events) if events else ((),) * len(BalanceEvent._fields)
    row = await connection.fetchrow(
        WRITE_BATCH,
        text_array(account_ids),
        int_array([changes[a].balance_delta for a in account_ids]),
        int_array([changes[a].reserved_delta for a in account_ids]),
        int_array([changes[a].versions for a in account_ids]),
        [t.transaction_id for t in transfers],
        text_array([t.kind for t in transfers]),
        nullable_text_array([t.from_account for t in transfers]),
        text_array([t.to_account for t in transfers]),
        int_array([t.amount for t in transfers]),
        text_array([t.currency for t in transfers]),
        text_array([t.mode for t in transfers]),
        text_array([r.protocol for r in results]),
        text_array([r.status for r in results]),
        text_array([r.phase for r in results]),
        nullable_text_array([r.error_code for r in results]),
        [t.request_hash for t in transfers],
        list(event_ids),
        text_array(event_accounts),
        int_array(versions),
        text_array(kinds),
        int_array(amounts),
        int_array(reserved_deltas),
        int_array(balances_after),
        int_array(reserved_after),
        text_array(currencies),
    )
    assert row is not None, "the write's counts are one row"
    moved, recorded, evented, created_at = row
    assert moved == len(account_ids), f"batch moved {moved} accounts, planned {len(account_ids)}"
    assert recorded == len(results), f"batch recorded {recorded} transfers, planned {len(results)}"
    assert evented == len(events), f"batch wrote {evented} outbox events, planned {len(events)}"
    return created_at


# Is some unfinished transaction (a prepared 2PC branch, or a batch still open) holding this
# transaction id's record? Inserting the same key waits on it; a short lock_timeout turns the
# wait into the answer. The probe row is always rolled back.
PROBE_LOCK_TIMEOUT = "100ms"
PROBE_INSERT = """
INSERT INTO transfers (transaction_id, kind, from_account, to_account, amount, currency, mode, protocol,
                       status, phase, error_code, request_hash)
VALUES ($1, 'transfer', NULL, '-', 1, 'XXX', '2pc', '2pc', 'success', 'probe', NULL, '\\x')
"""
LOCK_NOT_AVAILABLE = "55P03"


async def record_is_held(connection: Connection, transaction_id: UUID) -> bool:
    """True if an unfinished transaction holds this id's record (the transfer is in doubt)."""
    transaction = connection.transaction()
    await transaction.start()
    try:
        await connection.execute(f"SET LOCAL lock_timeout = '{PROBE_LOCK_TIMEOUT}'")
        await connection.execute(PROBE_INSERT, transaction_id)
        return False
    except asyncpg.PostgresError as error:
        if getattr(error, "sqlstate", None) == LOCK_NOT_AVAILABLE:
            return True
        if isinstance(error, asyncpg.UniqueViolationError):
            return False  # committed meanwhile: a fresh read finds it
        raise
    finally:
        await transaction.rollback()
