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
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import asyncpg

from core.runtime import fault_points, tracing
from core.runtime.background import Periodic
from core.runtime.fan_out import fan_out
from ledger.contract import LedgerPartition, LedgerServers, StreamAppend
from ledger.partitions import UNREACHABLE
from shards.contract import RelayRow, Shards
from shards.errors import ShardError

log = logging.getLogger("wallet.relay")

RELAY_BATCH_MAX = 5000
DRAIN_ROUNDS_MAX = 10_000
INTERVAL_S_DEFAULT = 0.2
# Accounts whose latest (version, visible_at) is remembered; past it the memory starts over.
VISIBLE_REMEMBERED_MAX = 1_000_000


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
    rows: Sequence[RelayRow],
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


class Relay:
    def __init__(self, shards: Shards, partitions: LedgerServers) -> None:
        self.shards = shards
        self.partitions = partitions
        self.duplicates_dropped = 0
        self.visible: dict[str, tuple[int, str]] = {}  # account -> (version, visible_at) last relayed

    async def relay_stream(self, stream: str) -> int:
        """One round for one stream; the number of outbox rows it consumed."""
        started_ns = time.time_ns()
        async with self.shards.session(stream) as session:
            rows = await session.select_relay_rows(RELAY_BATCH_MAX)
        if not rows:
            return 0
        with tracing.phase_since(started_ns, "relay.round", stream=stream, rows=len(rows)):
            return await self._relay_rows(stream, rows)

    async def _relay_rows(self, stream: str, rows: list[RelayRow]) -> int:
        """Chain `rows` (the stream's outbox, in order) into its ledger server, then delete them."""
        partition = self.partitions.holding(stream)
        tracing.annotate(ledger=partition.name)
        async with partition.append(stream) as appending:
            position, head, state, source_high = appending.head
            if state != "live":
                raise StreamFenced(f"stream {stream} on ledger {partition.name} is {state}: its outbox waits")
            skip = await appending.present([(r[1], r[2]) for r in rows if r[0] <= source_high])
            self.duplicates_dropped += len(skip)
            tracing.annotate(duplicates=len(skip))
            priors = await self._priors(appending, partition, rows, skip)
            chained = chain_rows(stream, position, head, rows, skip, priors)
            await appending.extend(chained.lines, chained.position, chained.head, chained.source_high)
        self._remember(chained.visible)
        fault_points.reach("relay.after_ledger_commit")
        async with self.shards.session(stream) as session:
            await session.delete_relayed([row[0] for row in rows])
        return len(rows)

    async def _priors(
        self,
        appending: StreamAppend,
        partition: LedgerPartition,
        rows: Sequence[RelayRow],
        skip: set[tuple[str, int]],
    ) -> Callable[[str, int], str | None]:
        """visible_at(account, version) of the version before each account's first row in
        `rows`: remembered, or looked up on this stream's server (in the append, on the
        connection that holds the head: a second one from the same pool could wait on
        itself), then on the others (Partition.relaying leaves each pool a connection for them)."""
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
            if name == partition.name:
                answered = await appending.prior_visible(wanted)
            else:
                answered = await self.partitions[name].prior_visible(wanted)
            for account_id, moment in answered.items():
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
