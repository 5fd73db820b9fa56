"""SQL for transfer records (the idempotency table) and batched balance changes."""

from __future__ import annotations

from datetime import datetime

import asyncpg

from core.domain.postings import AccountChange, BalanceEvent
from core.domain.transfers import RecordColumns, Transfer, TransferResult
from shards.arrays import int_array, nullable_text_array, text_array
from shards.pool import Connection

# What a record answers with (request_hash stays on the shard: it is kept for audit).
RESULT_COLUMNS = (
    "transaction_id, kind, from_account, to_account, amount, currency, mode, "
    "protocol, status, phase, error_code, created_at"
)

# Ids travel as one text literal (shards/arrays.py; the server checks each is a UUID),
# unnested once in FROM, and come back as text (shards/pool.py).
SELECT_TRANSFERS = f"""
SELECT {RESULT_COLUMNS} FROM transfers
WHERE transaction_id IN (SELECT id FROM unnest(($1::text)::uuid[]) AS wanted(id))
"""


def request_hash_sql(alias: str, kind: str | None = None) -> str:
    """The request hash of the row `alias` (columns kind, from_account, to_account, amount,
    currency; `kind`: one for every row, where the row has none), computed by the server as it
    inserts: SHA-256 of the compact JSON list
    ["kind",from|null,"to",amount,"currency"], the form every record has stored, which must
    never change. The text is JSON as written because every part is a validated id, a
    currency code or a word: ASCII with no quote, backslash or control character
    (core/domain/validation.py; tests/test_hot_path.py holds it equal to json.dumps)."""
    assert kind is None or kind.isalpha(), "kind is a word of our own"
    kind_sql = f"{alias}.kind" if kind is None else f"'{kind}'"
    return (
        f"""sha256(convert_to('["' || {kind_sql} || '",' || coalesce('"' || {alias}.from_account || '"', 'null') """
        f"""|| ',"' || {alias}.to_account || '",' || {alias}.amount || ',"' || {alias}.currency || '"]', 'UTF8'))"""
    )


# The whole write side of a batch on one shard in one round trip: folded account
# changes (one row update per account, however many transfers touch it), one record
# per new transfer, one outbox row per balance change, and, on a two-phase batch's
# decision shard, its commit decision ($25; NULL elsewhere), which is then durable exactly
# when this transaction's COMMIT is (the commit point: coordinator/protocols/two_phase.py).
# The counts come back so the caller can assert all landed whole. Text and integer
# columns travel as one literal each (shards/arrays.py).
WRITE_CTES = """
moved AS (
    UPDATE accounts AS a
    SET balance = a.balance + d.delta, reserved = a.reserved + d.reserved_delta,
        version = a.version + d.versions, updated_at = now()
    FROM unnest(($1::text)::text[], ($2::text)::bigint[], ($3::text)::bigint[], ($4::text)::bigint[])
         AS d(account_id, delta, reserved_delta, versions)
    WHERE a.account_id = d.account_id
    RETURNING 1
), recorded AS (
    INSERT INTO transfers (transaction_id, kind, from_account, to_account, amount, currency,
                           mode, protocol, status, phase, error_code, request_hash)
    SELECT t.*, {hash}
    FROM unnest(($5::text)::uuid[], ($6::text)::text[], ($7::text)::text[], ($8::text)::text[],
                ($9::text)::bigint[], ($10::text)::text[], ($11::text)::text[], ($12::text)::text[],
                ($13::text)::text[], ($14::text)::text[], ($15::text)::text[])
         AS t(transaction_id, kind, from_account, to_account, amount, currency, mode, protocol, status, phase,
              error_code)
    RETURNING 1
), evented AS (
    INSERT INTO outbox (transaction_id, account_id, version, kind, amount, reserved_delta,
                        balance_after, reserved_after, currency)
    SELECT * FROM unnest(($16::text)::uuid[], ($17::text)::text[], ($18::text)::bigint[], ($19::text)::text[],
                         ($20::text)::bigint[], ($21::text)::bigint[], ($22::text)::bigint[], ($23::text)::bigint[],
                         ($24::text)::text[])
    RETURNING 1
), decided AS (
    INSERT INTO commit_decisions (batch_id, outcome) SELECT $25::uuid, 'commit' WHERE $25::uuid IS NOT NULL
    RETURNING 1
)
""".replace("{hash}", request_hash_sql("t"))
# What the write's counts are, in this order (shards/steps.py adds its own after them).
WRITE_COUNTS = """(SELECT count(*) FROM moved) AS moved, (SELECT count(*) FROM recorded) AS recorded,
       (SELECT count(*) FROM evented) AS evented, (SELECT count(*) FROM decided) AS decided, now() AS created_at"""
WRITE_BATCH = f"WITH {WRITE_CTES}\nSELECT {WRITE_COUNTS}\n"


def result_from_row(row: asyncpg.Record) -> TransferResult:
    """A stored record (its RESULT_COLUMNS, in order) as the result it answers with."""
    (
        transaction_id,
        kind,
        from_account,
        to_account,
        amount,
        currency,
        mode,
        protocol,
        status,
        phase,
        error_code,
        created_at,
    ) = row
    return TransferResult(
        Transfer(transaction_id, kind, from_account, to_account, amount, currency, mode),
        status,
        error_code,
        protocol,
        phase,
        created_at,
    )


async def select_transfers(connection: Connection, transaction_ids: list[str]) -> dict[str, TransferResult]:
    """The stored records of these ids, by id. A retry is compared by its movement
    (Transfer.movement)."""
    rows = await connection.fetch(SELECT_TRANSFERS, text_array(transaction_ids))
    return {row[0]: result_from_row(row) for row in rows}


async def write_batch(
    connection: Connection,
    changes: dict[str, AccountChange],
    records: RecordColumns,
    events: list[BalanceEvent],
    commit_decision: str | None = None,
) -> datetime:
    """Write a planned batch (or one shard's part of it). Must run inside the transaction
    that locked the accounts. With `commit_decision` (a batch id), this shard is the batch's
    decision shard and the 'commit' decision is written too. Returns the records' created_at
    (the transaction's start: one value per batch)."""
    row = await connection.fetchrow(WRITE_BATCH, *write_arguments(changes, records, events, commit_decision))
    return checked_write(row, changes, records, events, commit_decision)


def write_arguments(
    changes: dict[str, AccountChange], records: RecordColumns, events: list[BalanceEvent], commit_decision: str | None
) -> tuple[object, ...]:
    """WRITE_CTES' parameters, $1..$25."""
    account_ids = sorted(changes)
    # Events are tuples in the outbox's column order ($16..$24): one transpose gives the columns.
    (
        event_ids,
        event_accounts,
        versions,
        kinds,
        amounts,
        reserved_deltas,
        balances_after,
        reserved_after,
        currencies,
    ) = zip(*events, strict=True) if events else ((),) * len(BalanceEvent._fields)
    # Transfers are tuples too (transaction_id, kind, from, to, amount, currency, mode).
    (ids, transfer_kinds, senders, receivers, transfer_amounts, transfer_currencies, modes) = (
        zip(*records.transfers, strict=True) if records.transfers else ((),) * len(Transfer._fields)
    )
    return (
        text_array(account_ids),
        int_array([changes[a].balance_delta for a in account_ids]),
        int_array([changes[a].reserved_delta for a in account_ids]),
        int_array([changes[a].versions for a in account_ids]),
        text_array(ids),
        text_array(transfer_kinds),
        nullable_text_array(senders),
        text_array(receivers),
        int_array(transfer_amounts),
        text_array(transfer_currencies),
        text_array(modes),
        text_array(records.protocols),
        text_array(records.statuses),
        text_array(records.phases),
        nullable_text_array(records.error_codes),
        text_array(event_ids),
        text_array(event_accounts),
        int_array(versions),
        text_array(kinds),
        int_array(amounts),
        int_array(reserved_deltas),
        int_array(balances_after),
        int_array(reserved_after),
        text_array(currencies),
        commit_decision,
    )


def checked_write(
    row: asyncpg.Record | None,
    changes: dict[str, AccountChange],
    records: RecordColumns,
    events: list[BalanceEvent],
    commit_decision: str | None,
) -> datetime:
    """The write's created_at, once its counts (WRITE_COUNTS) say every part landed whole."""
    assert row is not None, "the write's counts are one row"
    moved, recorded, evented, decided, created_at = row[:5]
    assert moved == len(changes), f"batch moved {moved} accounts, planned {len(changes)}"
    assert recorded == len(records.transfers), f"batch recorded {recorded} transfers, planned {len(records.transfers)}"
    assert evented == len(events), f"batch wrote {evented} outbox events, planned {len(events)}"
    assert decided == (commit_decision is not None), f"batch wrote {decided} commit decisions"
    created: datetime = created_at
    return created


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


async def record_is_held(connection: Connection, transaction_id: str) -> bool:
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
