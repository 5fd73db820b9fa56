"""SQL for the barrier table: one row per (transfer, branch, operation) that ran on this shard,
written in the same local transaction as the business change it guards. What the rows mean
is decided in coordinator/domain/branch_plan.py."""
from __future__ import annotations

from shards.arrays import text_array
from shards.pool import Connection

SELECT_BARRIER = """
SELECT transaction_id, branch, operation, origin FROM barrier
WHERE transaction_id IN (SELECT id FROM unnest(($1::text)::uuid[]) AS wanted(id))
"""
# No ON CONFLICT: a duplicate racing us makes this fail, the batch retries, and sees the row.
INSERT_BARRIER = """
INSERT INTO barrier (transaction_id, branch, operation, origin)
SELECT * FROM unnest(($1::text)::uuid[], ($2::text)::text[], ($3::text)::text[], ($4::text)::text[])
"""


async def select_barrier(connection: Connection, transaction_ids: list[str]) -> dict[tuple[str, str, str], str]:
    rows = await connection.fetch(SELECT_BARRIER, text_array(transaction_ids))
    return {(row["transaction_id"], row["branch"], row["operation"]): row["origin"] for row in rows}


async def insert_barrier(connection: Connection, rows: list[tuple[str, str, str, str]]) -> None:
    if rows:
        ids, branches, operations, origins = zip(*rows)
        await connection.execute(INSERT_BARRIER, text_array(ids), text_array(branches), text_array(operations),
                                 text_array(origins))
