"""The relay: shard outboxes -> the ledger, at least once, landing exactly once.

Per shard, per round: read up to RELAY_BATCH_MAX outbox rows in event order; in one
ledger transaction, lock the shard's stream head, drop events already in the ledger
(deduplication on (account, version)), chain and append the rest; commit; then delete
the relayed rows from the outbox. A crash between commit and delete re-reads rows that
are already in the ledger, and they are dropped on arrival. Two relays at once serialize
on the stream head.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import asyncpg

from core.runtime import fault_points
from core.runtime.background import Periodic
from core.runtime.fan_out import fan_out
from ledger import store
from ledger.chain import LedgerEvent, chain_hash
from shards import outbox as outbox_sql
from shards.errors import ShardError
from shards.pool import ShardPools

log = logging.getLogger("wallet.relay")

RELAY_BATCH_MAX = 5000
# The relay shares its process (and event loop) with the API: it yields after this many
# events so a round of hashing never holds requests back for long.
RELAY_YIELD_EVERY = 200
DRAIN_ROUNDS_MAX = 10_000
INTERVAL_S_DEFAULT = 0.2


class Relay:
    def __init__(self, pools: ShardPools, ledger_pool: asyncpg.Pool, shards: list[str]) -> None:
        self.pools = pools
        self.ledger_pool = ledger_pool
        self.shards = shards
        self.duplicates_dropped = 0

    async def relay_shard(self, shard: str) -> int:
        """One round for one shard; the number of outbox rows it consumed."""
        async with self.pools.connection(shard) as connection:
            rows = await outbox_sql.select_outbox(connection, RELAY_BATCH_MAX)
        if not rows:
            return 0
        async with self.ledger_pool.acquire() as ledger, ledger.transaction():
            position, head = await store.lock_head(ledger, shard)
            present = await store.existing_versions(ledger, [(r["account_id"], r["version"]) for r in rows])
            events = []
            for index, row in enumerate(rows):
                if index % RELAY_YIELD_EVERY == RELAY_YIELD_EVERY - 1:
                    await asyncio.sleep(0)  # hashing is CPU: let requests in between chunks
                if (row["account_id"], row["version"]) in present:
                    self.duplicates_dropped += 1
                    continue
                position += 1
                event = LedgerEvent(
                    stream=shard,
                    position=position,
                    source_event_id=row["event_id"],
                    **{
                        k: row[k]
                        for k in (
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
                        )
                    },
                    prev_hash=head,
                )
                head = chain_hash(head, event)
                events.append(LedgerEvent(**{**event.__dict__, "hash": head}))
            await store.append_events(ledger, events, await store.visible_at_of(ledger, events))
            await store.set_head(ledger, shard, position, head)
        fault_points.reach("relay.after_ledger_commit")
        async with self.pools.connection(shard) as connection:
            await outbox_sql.delete_outbox(connection, [row["event_id"] for row in rows])
        return len(rows)

    async def relay_once(self) -> int:
        rounds = await fan_out(list(self.shards), self.relay_shard)
        for shard, error in rounds.errors.items():
            if not isinstance(error, (ShardError, asyncpg.PostgresError, OSError)):
                raise error
            log.warning("relay of %s failed: %r; next round retries", shard, error)
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
