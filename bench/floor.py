"""The protocol's floor: what batched two-phase commit costs on these shards with nothing else.

Per batch, on its own tables (floor_accounts, floor_events, made and dropped here), locking
as the real protocol does (coordinator/protocols/two_phase.py): BEGIN on every shard at once,
then on every shard at once one `UPDATE floor_accounts ... FROM unnest($ids, $deltas)` (the
batch's changes folded per account; it takes the locks), one batch of this process at a
time (a lock wait ends after PARALLEL_LOCK_TIMEOUT_MS and the batch is retried shard by
shard in name order); then the batch's ledger rows by COPY, PREPARE TRANSACTION on every
shard, then COMMIT PREPARED on every shard. No idempotency record, no prior-record read, no
balance check, no outbox: the statements and round trips a batch cannot do without, so every
point of the benchmark is also a fraction of this one, measured in the same run.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import defaultdict
from typing import Any

import asyncpg

from bench.workload import Workload
from shard_router.topology import Topology

SETUP = """
DROP TABLE IF EXISTS floor_events;
DROP TABLE IF EXISTS floor_accounts;
CREATE TABLE floor_accounts (account_id text PRIMARY KEY, balance bigint NOT NULL);
CREATE TABLE floor_events (transaction_id uuid NOT NULL, account_id text NOT NULL, amount bigint NOT NULL);
"""
TEARDOWN = "DROP TABLE IF EXISTS floor_events; DROP TABLE IF EXISTS floor_accounts;"
APPLY = """
UPDATE floor_accounts AS a SET balance = a.balance + d.delta
FROM unnest($1::text[], $2::bigint[]) AS d(account_id, delta)
WHERE a.account_id = d.account_id
"""
# Lock waits end in a retry, as the real protocol's do (two batches meeting in another order).
RETRYABLE = (asyncpg.DeadlockDetectedError, asyncpg.LockNotAvailableError)
ATTEMPTS_MAX = 5
POOL_SIZE_MAX = 16
PARALLEL_LOCK_TIMEOUT_MS = 200  # as two_phase.PARALLEL_LOCK_TIMEOUT_MS


class Floor:
    def __init__(self, topology: Topology, ids: list[str], balance: int) -> None:
        self.topology = topology
        self.ids = ids
        self.balance = balance
        self.pools: dict[str, asyncpg.Pool] = {}
        self.retries = 0
        self.locking = asyncio.Lock()  # one batch at a time takes its locks

    async def __aenter__(self) -> Floor:
        for shard, dsn in sorted(self.topology.shards.items()):
            self.pools[shard] = await asyncpg.create_pool(
                dsn, min_size=2, max_size=POOL_SIZE_MAX, server_settings={"lock_timeout": "5s"}
            )
        by_shard: dict[str, list[str]] = defaultdict(list)
        for account_id in self.ids:
            by_shard[self.topology.shard_of(account_id)].append(account_id)
        for shard, pool in self.pools.items():
            async with pool.acquire() as connection:
                await connection.execute(SETUP)
                await connection.copy_records_to_table(
                    "floor_accounts",
                    columns=["account_id", "balance"],
                    records=[(a, self.balance) for a in by_shard[shard]],
                )
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        for pool in self.pools.values():
            async with pool.acquire() as connection:
                await connection.execute(TEARDOWN)
            await pool.close()

    async def apply(self, pairs: list[tuple[str, str]], amount: int) -> None:
        """One batch of transfers `amount` each, all or nothing across the shards."""
        deltas: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        events: dict[str, list[tuple[uuid.UUID, str, int]]] = defaultdict(list)
        for source, target in pairs:
            transaction_id = uuid.uuid4()
            debit, credit = self.topology.shard_of(source), self.topology.shard_of(target)
            deltas[debit][source] -= amount
            deltas[credit][target] += amount
            events[debit].append((transaction_id, source, -amount))
            events[credit].append((transaction_id, target, amount))
        for attempt in range(ATTEMPTS_MAX):
            try:
                return await self._attempt(deltas, events, in_order=attempt > 0)
            except RETRYABLE:
                self.retries += 1
                if attempt == ATTEMPTS_MAX - 1:
                    raise

    async def _attempt(
        self, deltas: dict[str, dict[str, int]], events: dict[str, list[tuple[uuid.UUID, str, int]]], in_order: bool
    ) -> None:
        shards = sorted(deltas)
        batch = uuid.uuid4()
        connections = {shard: await self.pools[shard].acquire() for shard in shards}
        prepared: list[str] = []

        async def lock(shard: str) -> None:
            changes = deltas[shard]
            ids = sorted(changes)
            await connections[shard].execute(APPLY, ids, [changes[a] for a in ids])

        try:
            begin = "BEGIN" if in_order else f"BEGIN; SET LOCAL lock_timeout = '{PARALLEL_LOCK_TIMEOUT_MS}ms'"
            await asyncio.gather(*(connections[shard].execute(begin) for shard in shards))
            async with self.locking:
                if in_order:  # the lock order: shards by name, accounts by id within each
                    for shard in shards:
                        await lock(shard)
                else:
                    await gather_all(*(lock(shard) for shard in shards))

            async def prepare(shard: str) -> None:
                await connections[shard].copy_records_to_table(
                    "floor_events", columns=["transaction_id", "account_id", "amount"], records=events[shard]
                )
                await connections[shard].execute(f"PREPARE TRANSACTION 'floor:{batch}:{shard}'")
                prepared.append(shard)

            await asyncio.gather(*(prepare(shard) for shard in shards))
            await asyncio.gather(
                *(connections[shard].execute(f"COMMIT PREPARED 'floor:{batch}:{shard}'") for shard in shards)
            )
        except BaseException:
            for shard in shards:
                connection = connections[shard]
                if shard in prepared:
                    await connection.execute(f"ROLLBACK PREPARED 'floor:{batch}:{shard}'")
                elif connection.is_in_transaction():
                    await connection.execute("ROLLBACK")
            raise
        finally:
            for shard, connection in connections.items():
                await self.pools[shard].release(connection)

    async def total(self) -> int:
        total = 0
        for pool in self.pools.values():
            async with pool.acquire() as connection:
                total += await connection.fetchval("SELECT coalesce(sum(balance), 0)::bigint FROM floor_accounts")
        return total


async def gather_all(*steps: Any) -> None:
    """Every step finishes before the first failure is raised (none is rolled back mid-statement)."""
    for outcome in await asyncio.gather(*steps, return_exceptions=True):
        if isinstance(outcome, BaseException):
            raise outcome


async def floor_point(
    floor: Floor, workload: Workload, per_call: int, calls_in_flight: int, seconds: float
) -> tuple[int, float, list[float]]:
    """(transfers applied, seconds, each batch's latency in seconds)."""
    applied = 0
    latencies: list[float] = []
    deadline = time.monotonic() + seconds

    async def caller() -> None:
        nonlocal applied
        while time.monotonic() < deadline:
            pairs = [workload.pair() for _ in range(per_call)]
            started = time.perf_counter()
            await floor.apply(pairs, 1)
            latencies.append(time.perf_counter() - started)
            applied += len(pairs)

    started = time.monotonic()
    await asyncio.gather(*(caller() for _ in range(calls_in_flight)))
    return applied, time.monotonic() - started, latencies
