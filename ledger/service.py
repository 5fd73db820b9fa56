"""The ledger as the coordinator uses it: one pool to the ledger database, the relay, and
the read side (replay, history, snapshots, audit)."""
from __future__ import annotations

import asyncio
import logging
from datetime import datetime, time, timedelta, timezone
from typing import Callable

import asyncpg

from ledger import store
from ledger.audit import AuditReport, audit, verify_chain
from ledger.chain import Break, LedgerEvent
from coordinator.runtime.background import Periodic
from ledger.relay import Relay, relay_worker
from ledger.replay import Replay, replay_balances, take_snapshot
from shards.pool import SERVER_SETTINGS, ShardPools, carry_uuids_as_text

POOL_SIZE_MAX = 4
# Events of 23:59:59 may still sit in an outbox for a moment after midnight.
SNAPSHOT_SETTLE_S = 60

log = logging.getLogger("wallet.ledger")


class LedgerService:
    def __init__(self, dsn: str, pools: ShardPools, shards: list[str]) -> None:
        self.dsn = dsn
        self.pools = pools
        self.shards = shards
        self.pool: asyncpg.Pool | None = None
        self.relay: Relay | None = None
        self.worker: Periodic | None = None
        self.snapshots: asyncio.Task[None] | None = None

    async def open(self, run_relay: bool = False, gate: Callable[[], bool] | None = None) -> LedgerService:
        self.pool = await asyncpg.create_pool(self.dsn, min_size=1, max_size=POOL_SIZE_MAX, timeout=5,
                                              command_timeout=300, server_settings={**SERVER_SETTINGS,
                                                                                    "statement_timeout": "300s"},
                                              init=carry_uuids_as_text)
        self.relay = Relay(self.pools, self.pool, self.shards)
        if run_relay:
            self.worker = relay_worker(self.relay, gate=gate)
            self.worker.start()
            self.snapshots = asyncio.create_task(self._daily_snapshots(gate), name="ledger-daily-snapshot")
        return self

    async def _daily_snapshots(self, gate: Callable[[], bool] | None) -> None:
        """A snapshot of 00:00 UTC, taken once the day has turned (and its events are relayed)."""
        while True:
            now = datetime.now(timezone.utc)
            midnight = datetime.combine(now.date() + timedelta(days=1), time(0), tzinfo=timezone.utc)
            await asyncio.sleep((midnight - now).total_seconds() + SNAPSHOT_SETTLE_S)
            if gate is not None and not gate():
                continue  # the leader takes it
            try:
                await self.drain()
                await self.snapshot(midnight)
            except Exception:
                log.exception("daily snapshot of %s failed", midnight)

    async def close(self) -> None:
        if self.snapshots is not None:
            self.snapshots.cancel()
            await asyncio.gather(self.snapshots, return_exceptions=True)
            self.snapshots = None
        if self.worker is not None:
            await self.worker.stop()
            self.worker = None
        if self.pool is not None:
            await self.pool.close()
            self.pool = None

    def _pool(self) -> asyncpg.Pool:
        assert self.pool is not None, "LedgerService.open() first"
        return self.pool

    async def drain(self) -> int:
        assert self.relay is not None
        return await self.relay.drain()

    async def verify(self) -> list[Break]:
        async with self._pool().acquire() as connection:
            return await verify_chain(connection)

    async def replay(self, at: datetime, account_id: str | None = None, use_snapshot: bool = True) -> Replay:
        async with self._pool().acquire() as connection:
            return await replay_balances(connection, at, account_id, use_snapshot)

    async def snapshot(self, at: datetime) -> int:
        async with self._pool().acquire() as connection:
            return await take_snapshot(connection, at)

    async def history(self, account_id: str, after_version: int, limit: int) -> list[LedgerEvent]:
        async with self._pool().acquire() as connection:
            return await store.account_events(connection, account_id, after_version, limit)

    async def audit(self) -> AuditReport:
        async with self._pool().acquire() as connection:
            return await audit(self.pools, self.shards, connection)
