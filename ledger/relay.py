"""The relay: shard outboxes -> the ledger, at least once, landing exactly once.

Per stream (one shard's events), per round: read up to RELAY_BATCH_MAX outbox rows in event
order; on the ledger server that holds the stream (ledger/partitions.py), in one
transaction, lock the stream's head (refused unless it is `live`: a stream being moved is
left alone), drop rows already in the stream, chain and append the rest; commit; then
delete the relayed rows from the outbox. A crash between commit and delete re-reads rows
that are already in the stream, and they are dropped on arrival. Two relays at once
serialize on the stream head.

Columns, not objects: the shard formats each row's hashed fields as one text (the chain's
canonical form, ledger/chain.py, after the stream and position), the relay hashes in a
tight loop over those texts and writes the rows by COPY, each a line made from the same
text. Measured against hashing in SQL with PostgreSQL's sha256() (a chain is a fold: one
statement per event, or a PL/pgSQL loop), the loop here is the faster by far
(docs/figures.md).

Which rows may already be there: the head keeps the highest outbox id relayed
(`source_high`); rows above it are new for certain, rows at or below it (a transaction
that committed late, a relay that died before its delete) are looked up by (account,
version). visible_at, the running maximum of an account's created_at in version order, is
carried in memory per account (bounded); an account not remembered is looked up, on every
ledger server (its earlier versions may be in a stream on another one).

Traced (runtime/tracing.py), a stream's round that found rows is the span `relay.round`.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass

import asyncpg

from core.runtime import fault_points, tracing
from core.runtime.background import Periodic
from core.runtime.fan_out import fan_out
from ledger.chain import GENESIS
from ledger.partitions import UNREACHABLE, LedgerPartitions, Partition
from shards.arrays import int_array, text_array
from shards.errors import ShardError
from shards.pool import Connection, ShardPools

log = logging.getLogger("wallet.relay")

RELAY_BATCH_MAX = 5000
DRAIN_ROUNDS_MAX = 10_000
INTERVAL_S_DEFAULT = 0.2
# Accounts whose latest (version, visible_at) is remembered; past it the memory starts over.
VISIBLE_REMEMBERED_MAX = 1_000_000
# An outbox moment as the chain writes it (UTC, microseconds): text of that form sorts as time.
MOMENT = """to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')"""
# What the relay reads of a row: its id, account and version, its moment, and every hashed
# field after stream and position as one text, \x1f between them (ledger/chain.py).
SELECT_FOR_RELAY = f"""
SELECT event_id, account_id, version, moment,
       concat_ws(E'\\x1f', event_id, transaction_id, account_id, version, kind, amount, reserved_delta,
                 balance_after, reserved_after, currency, moment) AS hashed
FROM (SELECT *, {MOMENT} AS moment FROM outbox ORDER BY event_id LIMIT $1) AS waiting
"""
DELETE_RELAYED = "DELETE FROM outbox WHERE event_id IN (SELECT unnest(($1::text)::bigint[]))"
CREATE_HEAD = "INSERT INTO ledger_heads (stream, position, hash) VALUES ($1, 0, $2) ON CONFLICT (stream) DO NOTHING"
LOCK_HEAD = "SELECT position, hash, state, source_high FROM ledger_heads WHERE stream = $1 FOR UPDATE"
SET_HEAD = "UPDATE ledger_heads SET position = $2, hash = $3, source_high = greatest(source_high, $4) WHERE stream = $1"
PRESENT = """
SELECT e.account_id, e.version FROM ledger_events e
JOIN unnest(($2::text)::text[], ($3::text)::bigint[]) AS k(account_id, version)
  ON e.account_id = k.account_id AND e.version = k.version
WHERE e.stream = $1
"""
# The visible_at of each account's version before its first one here (wherever it lies).
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


class StreamFenced(Exception):
    """The stream's head on this ledger server is not live: it is being moved, or lives elsewhere."""


@dataclass
class Chained:
    """A round's rows, chained: the COPY text, the new head, what visible_at became."""

    lines: bytes
    position: int
    head: bytes
    source_high: int
    visible: dict[str, tuple[int, str]]


def chain_rows(
    stream: str,
    position: int,
    head: bytes,
    rows: Sequence[asyncpg.Record],
    skip: set[tuple[str, int]],
    visible: Callable[[str, int], str | None],
) -> Chained:
    """Hash the rows not in `skip` after `head`, in order; `visible(account, version)` is the
    visible_at of an account's version before this round (None: none)."""
    sha256 = hashlib.sha256
    prefix = stream + "\x1f"
    line_prefix = stream + "\t"
    lines: list[str] = []
    seen: dict[str, tuple[int, str]] = {}
    high = 0
    for event_id, account_id, version, moment, hashed in rows:
        high = event_id
        if skip and (account_id, version) in skip:
            continue
        position += 1
        digest = sha256(head + (prefix + str(position) + "\x1f" + hashed).encode()).digest()
        before = seen.get(account_id)
        earlier = before[1] if before is not None else visible(account_id, version)
        moment_visible = moment if earlier is None or moment > earlier else earlier
        seen[account_id] = (version, moment_visible)
        lines.append(
            line_prefix
            + str(position)
            + "\t"
            + hashed.replace("\x1f", "\t")
            + "\t\\\\x"
            + head.hex()
            + "\t\\\\x"
            + digest.hex()
            + "\t"
            + moment_visible
            + "\n"
        )
        head = digest
    return Chained("".join(lines).encode(), position, head, high, seen)


async def once(data: bytes) -> AsyncIterator[bytes]:
    """COPY's source as one chunk (asyncpg reads bytes given as such as a file's path)."""
    yield data


class Relay:
    def __init__(self, pools: ShardPools, partitions: LedgerPartitions) -> None:
        self.pools = pools
        self.partitions = partitions
        self.duplicates_dropped = 0
        self.visible: dict[str, tuple[int, str]] = {}  # account -> (version, visible_at) last relayed

    async def relay_stream(self, stream: str) -> int:
        """One round for one stream; the number of outbox rows it consumed."""
        started_ns = time.time_ns()
        async with self.pools.connection(stream) as connection:
            rows = await connection.fetch(SELECT_FOR_RELAY, RELAY_BATCH_MAX)
        if not rows:
            return 0
        with tracing.phase_since(started_ns, "relay.round", stream=stream, rows=len(rows)):
            return await self._relay_rows(stream, rows)

    async def _relay_rows(self, stream: str, rows: list[asyncpg.Record]) -> int:
        """Chain `rows` (the stream's outbox, in order) into its ledger server, then delete them."""
        partition = self.partitions.holding(stream)
        tracing.annotate(ledger=partition.name)
        async with partition.relaying, partition.connection() as ledger, ledger.transaction():
            await ledger.execute(CREATE_HEAD, stream, GENESIS)
            locked = await ledger.fetchrow(LOCK_HEAD, stream)
            assert locked is not None, "the head was created above"
            position, head, state, source_high = locked
            if state != "live":
                raise StreamFenced(f"stream {stream} on ledger {partition.name} is {state}: its outbox waits")
            skip = await self._present(ledger, stream, [r for r in rows if r[0] <= source_high])
            self.duplicates_dropped += len(skip)
            tracing.annotate(duplicates=len(skip))
            priors = await self._priors(ledger, partition, rows, skip)
            chained = chain_rows(stream, position, bytes(head), rows, skip, priors)
            if chained.lines:
                await ledger.copy_to_table(
                    "ledger_events", source=once(chained.lines), columns=COPY_COLUMNS, format="text"
                )
            await ledger.execute(SET_HEAD, stream, chained.position, chained.head, chained.source_high)
        self._remember(chained.visible)
        fault_points.reach("relay.after_ledger_commit")
        async with self.pools.connection(stream) as connection:
            await connection.execute(DELETE_RELAYED, int_array([row[0] for row in rows]))
        return len(rows)

    async def _present(self, ledger: Connection, stream: str, rows: list[asyncpg.Record]) -> set[tuple[str, int]]:
        """Those of `rows` (at or below the head's watermark) the stream already holds."""
        if not rows:
            return set()
        found = await ledger.fetch(PRESENT, stream, text_array([r[1] for r in rows]), int_array([r[2] for r in rows]))
        return {(row[0], row[1]) for row in found}

    async def _priors(
        self, ledger: Connection, partition: Partition, rows: Sequence[asyncpg.Record], skip: set[tuple[str, int]]
    ) -> Callable[[str, int], str | None]:
        """visible_at(account, version) of the version before each account's first row in
        `rows`: remembered, or looked up on this stream's server (on `ledger`, the connection
        that holds the head: a second one from the same pool could wait on itself), then on
        the others (Partition.relaying leaves each pool a connection for them)."""
        firsts: set[str] = set()
        wanted: dict[str, int] = {}
        for _, account_id, version, _, _ in rows:
            if account_id in firsts or (account_id, version) in skip:
                continue
            firsts.add(account_id)
            remembered = self.visible.get(account_id)
            if version > 1 and (remembered is None or remembered[0] != version - 1):
                wanted[account_id] = version - 1
        found: dict[str, str] = {}
        for name in [partition.name, *(n for n in self.partitions.names() if n != partition.name)]:
            if not wanted:
                break
            arguments = (PRIOR_VISIBLE, text_array(list(wanted)), int_array(list(wanted.values())))
            if name == partition.name:
                answered = await ledger.fetch(*arguments)
            else:
                async with self.partitions[name].connection() as connection:
                    answered = await connection.fetch(*arguments)
            for account_id, moment in answered:
                found[account_id] = moment
                del wanted[account_id]
        remembered_now = self.visible

        def visible(account_id: str, version: int) -> str | None:
            if account_id in found:
                return found[account_id]
            remembered = remembered_now.get(account_id)
            return remembered[1] if remembered is not None and remembered[0] == version - 1 else None

        return visible

    def _remember(self, relayed: dict[str, tuple[int, str]]) -> None:
        if len(self.visible) + len(relayed) > VISIBLE_REMEMBERED_MAX:
            self.visible.clear()
        self.visible.update(relayed)

    async def relay_once(self) -> int:
        rounds = await fan_out(self.partitions.streams(), self.relay_stream)
        for stream, error in rounds.errors.items():
            if not isinstance(error, (ShardError, asyncpg.PostgresError, *UNREACHABLE, StreamFenced)):
                raise error
            log.warning("relay of stream %s failed: %s; next round retries", stream, error)
        return sum(rounds.results.values())

    async def drain(self) -> int:
        """Relay until every outbox is empty (as of the last round)."""
        total = 0
        for _ in range(DRAIN_ROUNDS_MAX):
            moved = await self.relay_once()
            total += moved
            if moved == 0:
                return total
        raise RuntimeError(f"outboxes not drained after {DRAIN_ROUNDS_MAX} rounds")


def relay_worker(
    relay: Relay, interval_s: float = INTERVAL_S_DEFAULT, gate: Callable[[], bool] | None = None
) -> Periodic:
    """Relays continuously while there is work, and polls every `interval_s` when there is none."""

    async def one_round() -> bool:
        return await relay.relay_once() > 0

    return Periodic("ledger-relay", one_round, interval_s, gate)
