"""The ledger as the coordinator uses it: a pool per ledger server, the relay, and the read
side (replay, history, snapshots, audit) merged across the servers."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from pathlib import Path

from core.domain.errors import ConfigurationError
from core.runtime.background import Periodic
from ledger import anchors, health, snapshots, store
from ledger.anchors import AnchorStore, Rewrite
from ledger.audit import AuditReport, audit, verify_chain
from ledger.chain import Break, LedgerEvent
from ledger.history import account_history
from ledger.partitions import LedgerPartitions, Partition
from ledger.rederive import RederiveReport, rederive
from ledger.relay import Relay, relay_worker
from ledger.replay import Replay, replay_balances
from ledger.snapshots import take_snapshot
from shard_router.topology import LedgerServer, Topology
from shards.pool import ShardPools
from shards.postgres import PostgresShards

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
    verify_every_s: int = 0  # the relay leader's periodic verification, recorded (0: none)


class LedgerService:
    """The ledger over its servers (ledger/partitions.py): the relay writes each stream to the
    server that holds it, and every read asks each server about its streams and merges."""

    def __init__(
        self,
        ledgers: Mapping[str, LedgerServer],
        pools: ShardPools,
        shards: list[str],
        anchoring: Anchoring | None = None,
    ) -> None:
        self.partitions = LedgerPartitions(ledgers)
        self.pools = pools
        self.shards = shards
        self.anchoring = anchoring
        self.checkpoints: Periodic | None = None
        self.relay = Relay(PostgresShards(self.pools), self.partitions)
        self.worker: Periodic | None = None
        self.snapshots: asyncio.Task[None] | None = None
        self.verifications: asyncio.Task[None] | None = None

    async def open(self, run_relay: bool = False, gate: Callable[[], bool] | None = None) -> LedgerService:
        await self.partitions.open()
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
            if anchoring is not None and anchoring.verify_every_s:
                self.verifications = asyncio.create_task(
                    self._periodic_verifications(anchoring.verify_every_s, gate), name="ledger-verify"
                )
        return self

    async def _periodic_verifications(self, every_s: int, gate: Callable[[], bool] | None) -> None:
        """The whole ledger verified and the result recorded every `every_s`, first after one
        interval (a relay that restarts does not verify at once each time)."""
        while True:
            await asyncio.sleep(every_s)
            if gate is not None and not gate():
                continue  # the leader verifies
            try:
                await self.verify_and_record()
            except Exception:
                log.exception("periodic ledger verification failed to finish")

    async def follow(self, topology: Topology) -> None:
        """A new topology: its shards, and its ledger servers and their streams."""
        self.shards[:] = sorted(topology.shards)
        await self.partitions.switch(topology.ledgers)

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
        if self.verifications is not None:
            self.verifications.cancel()
            await asyncio.gather(self.verifications, return_exceptions=True)
            self.verifications = None
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
        await self.partitions.close()

    async def drain(self) -> int:
        return await self.relay.drain()

    async def event_count(self) -> int:
        async def one(partition: Partition) -> int:
            async with partition.connection() as connection:
                return await store.event_count(connection, partition.streams)

        return sum((await self.partitions.each(one)).values())

    async def verify(self, progress: Callable[[int], None] | None = None) -> list[Break]:
        return await verify_chain(self.partitions, progress)

    async def verify_and_record(self) -> tuple[list[Break], int, list[Rewrite]]:
        """The chain, the chain against every anchor, the result recorded: (breaks, anchors
        checked, rewrites)."""
        breaks = await self.verify()
        checked, rewrites = await self.verify_anchors()
        await self.record_verification(breaks, rewrites)
        if breaks or rewrites:
            log.error("ledger verification: %d events do not chain, %d streams rewritten", len(breaks), len(rewrites))
        return breaks, checked, rewrites

    async def record_verification(self, breaks: list[Break], rewrites: list[Rewrite]) -> None:
        """A verification's result, on each ledger server for its streams (ledger/health.py):
        what `/metrics` says until the next one."""

        async def one(partition: Partition) -> None:
            held = set(partition.streams)
            async with partition.connection() as connection:
                await health.record_verification(
                    connection,
                    await store.event_count(connection, partition.streams),
                    sum(1 for found in breaks if found.stream in held),
                    sum(1 for found in rewrites if found.stream in held),
                )

        await self.partitions.each(one)

    async def replay(
        self,
        at: datetime,
        account_id: str | None = None,
        use_snapshot: bool = True,
        progress: Callable[[int], None] | None = None,
    ) -> Replay:
        """Every server at once, its streams at once, merged."""
        return await replay_balances(self.partitions, at, account_id, use_snapshot, progress)

    async def snapshot(self, at: datetime, progress: Callable[[int], None] | None = None) -> dict[str, int]:
        """A snapshot of `at` on every ledger server, of the streams it holds: {server: id}."""

        async def one(partition: Partition) -> int:
            async with partition.connection() as connection:
                return await take_snapshot(connection, partition.streams, at, progress)

        return await self.partitions.each(one)

    async def history(self, account_id: str, after_version: int, limit: int) -> list[LedgerEvent]:
        return await account_history(self.partitions, account_id, after_version, limit)

    async def audit(self, progress: Callable[[int], None] | None = None) -> AuditReport:
        return await audit(self.pools, self.shards, self.partitions, progress)

    async def rederive(self, progress: Callable[[int], None] | None = None) -> RederiveReport:
        return await rederive(self.pools, self.shards, self.partitions, progress)

    def _one_server(self, ledger: str | None) -> Partition:
        names = self.partitions.names()
        if ledger is None:
            if len(names) != 1:
                raise ConfigurationError(f"the topology has ledger servers {names}: choose one with --ledger NAME")
            ledger = names[0]
        if ledger not in names:
            raise ConfigurationError(f"no ledger server {ledger!r} in the topology (it has {names})")
        return self.partitions[ledger]

    async def export_snapshot(
        self,
        snapshot_id: int | None,
        path: Path,
        progress: Callable[[int], None] | None = None,
        ledger: str | None = None,
    ) -> snapshots.Snapshot:
        """Snapshot `snapshot_id` (None: the latest) of one ledger server to a file."""
        partition = self._one_server(ledger)
        async with partition.connection() as connection:
            if snapshot_id is None:
                latest = await store.latest_snapshot(
                    connection, datetime(9999, 1, 1, tzinfo=UTC), partition.streams, whole_balances=True
                )
                if latest is None:
                    raise ConfigurationError(
                        f"no snapshot on ledger {partition.name} to export: take one with `wallet ledger snapshot`"
                    )
                snapshot_id = latest[0]
            return await snapshots.export_snapshot(connection, snapshot_id, path, progress)

    async def import_snapshot(self, path: Path) -> int:
        """Store an export on the ledger server that holds its streams (all of them: an export
        is one server's)."""
        streams = set(snapshots.read_export(path)[1])
        holders = {self.partitions.holding(stream).name for stream in streams} if streams else set()
        if len(holders) > 1:
            raise ConfigurationError(
                f"{path}: its streams are on ledger servers {sorted(holders)} now: import it where they were together"
            )
        partition = self.partitions[holders.pop()] if holders else self._one_server(None)
        async with partition.connection() as connection:
            return await snapshots.import_snapshot(connection, path)

    def _anchoring(self) -> Anchoring:
        if self.anchoring is None:
            raise ConfigurationError("no anchoring configured for the ledger")
        return self.anchoring

    async def checkpoint(self, create_key: bool = False) -> dict[str, tuple[int, bytes]]:
        """Every stream's head, signed, appended to the anchor file (and ZooKeeper)."""
        anchoring = self._anchoring()
        key = anchors.load_signing_key(anchoring.key_path, create=create_key)
        return await anchors.checkpoint(self.partitions, key, anchoring.anchor_file, anchoring.store)

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
        return len(found), await anchors.check_anchors(self.partitions, found)
