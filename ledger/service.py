"""The ledger as the coordinator uses it: one pool to the ledger database, the relay, and
the read side (replay, history, snapshots, audit)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from pathlib import Path

import asyncpg

from core.domain.errors import ConfigurationError
from core.runtime.background import Periodic
from ledger import anchors, snapshots, store
from ledger.anchors import AnchorStore, Rewrite
from ledger.audit import AuditReport, audit, verify_chain
from ledger.chain import Break, LedgerEvent
from ledger.rederive import RederiveReport, rederive
from ledger.relay import Relay, relay_worker
from ledger.replay import Replay, replay_balances
from ledger.snapshots import take_snapshot
from shards.pool import SERVER_SETTINGS, ShardPools, carry_uuids_as_text

POOL_SIZE_MAX = 4
# Events of 23:59:59 may still sit in an outbox for a moment after midnight.
SNAPSHOT_SETTLE_S = 60

log = logging.getLogger("wallet.ledger")


@dataclass(frozen=True)
class Anchoring:
    """Where checkpoints are signed and kept (ledger/anchors.py)."""

    key_path: Path
    anchor_file: Path
    store: AnchorStore | None = None  # ZooKeeper, when configured
    every_s: int = 60  # the serving leader's periodic checkpoint (0: none)


class LedgerService:
    def __init__(self, dsn: str, pools: ShardPools, shards: list[str], anchoring: Anchoring | None = None) -> None:
        self.dsn = dsn
        self.pools = pools
        self.shards = shards
        self.anchoring = anchoring
        self.checkpoints: Periodic | None = None
        self.pool: asyncpg.Pool | None = None
        self.relay: Relay | None = None
        self.worker: Periodic | None = None
        self.snapshots: asyncio.Task[None] | None = None

    async def open(self, run_relay: bool = False, gate: Callable[[], bool] | None = None) -> LedgerService:
        self.pool = await asyncpg.create_pool(
            self.dsn,
            min_size=1,
            max_size=POOL_SIZE_MAX,
            timeout=5,
            command_timeout=300,
            server_settings={**SERVER_SETTINGS, "statement_timeout": "300s"},
            init=carry_uuids_as_text,
        )
        self.relay = Relay(self.pools, self.pool, self.shards)
        if run_relay:
            self.worker = relay_worker(self.relay, gate=gate)
            self.worker.start()
            self.snapshots = asyncio.create_task(self._daily_snapshots(gate), name="ledger-daily-snapshot")
            anchoring = self.anchoring
            if anchoring is not None and anchoring.every_s and anchoring.key_path.exists():

                async def one_checkpoint() -> bool:
                    await self.checkpoint()
                    return False  # then wait the interval

                self.checkpoints = Periodic("ledger-checkpoint", one_checkpoint, anchoring.every_s, gate)
                self.checkpoints.start()
        return self

    async def _daily_snapshots(self, gate: Callable[[], bool] | None) -> None:
        """A snapshot of 00:00 UTC, taken once the day has turned (and its events are relayed)."""
        while True:
            now = datetime.now(UTC)
            midnight = datetime.combine(now.date() + timedelta(days=1), time(0), tzinfo=UTC)
            await asyncio.sleep((midnight - now).total_seconds() + SNAPSHOT_SETTLE_S)
            if gate is not None and not gate():
                continue  # the leader takes it
            try:
                await self.drain()
                await self.snapshot(midnight)
            except Exception:
                log.exception("daily snapshot of %s failed", midnight)

    async def close(self) -> None:
        if self.checkpoints is not None:
            await self.checkpoints.stop()
            self.checkpoints = None
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

    async def event_count(self) -> int:
        async with self._pool().acquire() as connection:
            return await store.event_count(connection)

    async def verify(self, progress: Callable[[int], None] | None = None) -> list[Break]:
        async with self._pool().acquire() as connection:
            return await verify_chain(connection, progress)

    async def replay(
        self,
        at: datetime,
        account_id: str | None = None,
        use_snapshot: bool = True,
        progress: Callable[[int], None] | None = None,
    ) -> Replay:
        """Streams read at once, on the pool's connections."""
        return await replay_balances(self._pool(), at, account_id, use_snapshot, progress)

    async def snapshot(self, at: datetime, progress: Callable[[int], None] | None = None) -> int:
        async with self._pool().acquire() as connection:
            return await take_snapshot(connection, at, progress)

    async def history(self, account_id: str, after_version: int, limit: int) -> list[LedgerEvent]:
        async with self._pool().acquire() as connection:
            return await store.account_events(connection, account_id, after_version, limit)

    async def audit(self, progress: Callable[[int], None] | None = None) -> AuditReport:
        async with self._pool().acquire() as connection:
            return await audit(self.pools, self.shards, connection, progress)

    async def rederive(self, progress: Callable[[int], None] | None = None) -> RederiveReport:
        async with self._pool().acquire() as connection:
            return await rederive(self.pools, self.shards, connection, progress)

    async def export_snapshot(
        self, snapshot_id: int | None, path: Path, progress: Callable[[int], None] | None = None
    ) -> snapshots.Snapshot:
        """Snapshot `snapshot_id` (None: the latest) to a file."""
        async with self._pool().acquire() as connection:
            if snapshot_id is None:
                latest = await store.latest_snapshot(connection, datetime(9999, 1, 1, tzinfo=UTC))
                if latest is None:
                    raise ConfigurationError("no snapshot to export: take one with `wallet ledger snapshot`")
                snapshot_id = latest[0]
            return await snapshots.export_snapshot(connection, snapshot_id, path, progress)

    async def import_snapshot(self, path: Path) -> int:
        async with self._pool().acquire() as connection:
            return await snapshots.import_snapshot(connection, path)

    def _anchoring(self) -> Anchoring:
        if self.anchoring is None:
            raise ConfigurationError("no anchoring configured for the ledger")
        return self.anchoring

    async def checkpoint(self, create_key: bool = False) -> dict[str, tuple[int, bytes]]:
        """Every stream's head, signed, appended to the anchor file (and ZooKeeper)."""
        anchoring = self._anchoring()
        key = anchors.load_signing_key(anchoring.key_path, create=create_key)
        async with self._pool().acquire() as connection:
            return await anchors.checkpoint(connection, key, anchoring.anchor_file, anchoring.store)

    async def verify_anchors(self) -> tuple[int, list[Rewrite]]:
        """(anchors checked, rewrites found) against the file and ZooKeeper; a bad anchor is
        refused (ConfigurationError). With no key, nothing was ever anchored here: (0, [])."""
        anchoring = self._anchoring()
        if not anchoring.key_path.exists():
            return 0, []
        public = anchors.load_signing_key(anchoring.key_path).public_key()
        found = anchors.read_file(anchoring.anchor_file, public)
        if anchoring.store is not None:
            found += anchors.read_store(anchoring.store, public, "zookeeper")
        async with self._pool().acquire() as connection:
            return len(found), await anchors.check_anchors(connection, found)
