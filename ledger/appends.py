"""The relay's append on PostgreSQL (ledger/contract.py's StreamAppend): the head locked FOR
UPDATE in the append's transaction, rows by one COPY, the head moved in the same transaction."""

from __future__ import annotations

from collections.abc import AsyncIterator

from ledger.chain import GENESIS
from ledger.contract import StreamHead
from shards.arrays import int_array, text_array
from shards.pool import Connection

CREATE_HEAD = "INSERT INTO ledger_heads (stream, position, hash) VALUES ($1, 0, $2) ON CONFLICT (stream) DO NOTHING"
LOCK_HEAD = "SELECT position, hash, state, source_high FROM ledger_heads WHERE stream = $1 FOR UPDATE"
SET_HEAD = "UPDATE ledger_heads SET position = $2, hash = $3, source_high = greatest(source_high, $4) WHERE stream = $1"
PRESENT = """
SELECT e.account_id, e.version FROM ledger_events e
JOIN unnest(($2::text)::text[], ($3::text)::bigint[]) AS k(account_id, version)
  ON e.account_id = k.account_id AND e.version = k.version
WHERE e.stream = $1
"""
# The visible_at of each account's given version (wherever it lies on this server).
PRIOR_VISIBLE = """
SELECT e.account_id, to_char(e.visible_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
FROM ledger_events e
JOIN unnest(($1::text)::text[], ($2::text)::bigint[]) AS k(account_id, version)
  ON e.account_id = k.account_id AND e.version = k.version
"""
COPY_COLUMNS = [
    "stream",
    "position",
    "source_event_id",
    "transaction_id",
    "account_id",
    "version",
    "kind",
    "amount",
    "reserved_delta",
    "balance_after",
    "reserved_after",
    "currency",
    "created_at",
    "prev_hash",
    "hash",
    "visible_at",
]


async def once(data: bytes) -> AsyncIterator[bytes]:
    """COPY's source as one chunk (asyncpg reads bytes given as such as a file's path)."""
    yield data


async def prior_visible(connection: Connection, wanted: dict[str, int]) -> dict[str, str]:
    if not wanted:
        return {}
    rows = await connection.fetch(PRIOR_VISIBLE, text_array(list(wanted)), int_array(list(wanted.values())))
    return {account_id: moment for account_id, moment in rows}


class PostgresAppend:
    """One append, inside a transaction on `connection` that has locked the head (lock_head)."""

    def __init__(self, connection: Connection, stream: str, head: StreamHead) -> None:
        self.connection = connection
        self.stream = stream
        self.head = head

    @classmethod
    async def lock_head(cls, connection: Connection, stream: str) -> PostgresAppend:
        await connection.execute(CREATE_HEAD, stream, GENESIS)
        locked = await connection.fetchrow(LOCK_HEAD, stream)
        assert locked is not None, "the head was created above"
        position, head, state, source_high = locked
        return cls(connection, stream, StreamHead(position, bytes(head), state, source_high))

    async def present(self, keys: list[tuple[str, int]]) -> set[tuple[str, int]]:
        if not keys:
            return set()
        found = await self.connection.fetch(
            PRESENT, self.stream, text_array([k[0] for k in keys]), int_array([k[1] for k in keys])
        )
        return {(row[0], row[1]) for row in found}

    async def prior_visible(self, wanted: dict[str, int]) -> dict[str, str]:
        return await prior_visible(self.connection, wanted)

    async def extend(self, lines: bytes, position: int, head: bytes, source_high: int) -> None:
        if lines:
            await self.connection.copy_to_table(
                "ledger_events", source=once(lines), columns=COPY_COLUMNS, format="text"
            )
        await self.connection.execute(SET_HEAD, self.stream, position, head, source_high)
