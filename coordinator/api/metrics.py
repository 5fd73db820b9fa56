"""Prometheus metrics: counted as requests happen, plus shard and ledger state read at scrape
time (what the alerts in docker/prometheus/rules.yml watch: docs/alerts.md).

One registry per app (tests build several apps in one process).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

import asyncpg
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from core.domain.errors import WalletError
from core.runtime.fan_out import fan_out
from ledger import health
from ledger.partitions import UNREACHABLE, Partition
from shards import outbox as outbox_sql
from shards import phase_state as phase_sql
from shards import replication
from shards import two_phase as two_phase_sql
from shards.errors import ShardError

if TYPE_CHECKING:
    from coordinator.service.wallet import WalletService

log = logging.getLogger("wallet.metrics")

CONTENT_TYPE = CONTENT_TYPE_LATEST
LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_SIZE_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)
# Unfinished TC/C and Saga transfers counted per shard at a scrape (bounded: a scrape stays cheap).
UNFINISHED_COUNT_MAX = 10_000
SCRAPE_SHARD_TIMEOUT_S = 2.0  # per shard and per ledger server
UNFINISHED_MODES = ("tcc", "saga")
# The singleton roles a coordinator's engine may lead (coordinator/cluster/coordination.py).
LEADER_ROLE = "singletons"


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.transfers = Counter(
            "wallet_transfers",
            "Transfers and deposits answered, by mode (protocol) and outcome (success or the error code)",
            ["kind", "mode", "outcome"],
            registry=r,
        )
        self.transfer_seconds = Histogram(
            "wallet_transfer_seconds",
            "Time to answer one transfer or deposit",
            ["kind", "mode"],
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.requests = Counter(
            "wallet_http_requests", "HTTP requests by route and status", ["route", "status"], registry=r
        )
        self.request_seconds = Histogram(
            "wallet_http_request_seconds",
            "HTTP request latency by route",
            ["route"],
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.batch_size = Histogram(
            "wallet_batch_size",
            "Transfers per applied batch, by applier (shard or protocol)",
            ["applier"],
            buckets=BATCH_SIZE_BUCKETS,
            registry=r,
        )
        self._declare_shard_state(r)
        self._declare_ledger_state(r)
        # Labelled children, kept: `labels()` locks and looks up on every call, four times a
        # request. Every label value is from a fixed set (routes, statuses, modes, codes).
        self._children: dict[tuple[object, ...], Any] = {}

    def _declare_shard_state(self, r: CollectorRegistry) -> None:
        """What is read from each shard at a scrape (and the pools, and this process)."""
        self.in_doubt = Gauge(
            "wallet_in_doubt_branches",
            "Prepared 2PC branches on the shard (in doubt until COMMIT/ROLLBACK PREPARED)",
            ["shard"],
            registry=r,
        )
        self.open_holds = Gauge(
            "wallet_open_holds",
            "Unfinished TC/C transfers whose debit shard is this one (money held)",
            ["shard"],
            registry=r,
        )
        self.unfinished_sagas = Gauge(
            "wallet_unfinished_sagas", "Unfinished Saga transfers whose debit shard is this one", ["shard"], registry=r
        )
        self.outbox_events = Gauge(
            "wallet_outbox_events", "Outbox rows not yet relayed to the ledger", ["shard"], registry=r
        )
        self.outbox_lag = Gauge(
            "wallet_outbox_lag_seconds", "Age of the oldest outbox row not yet relayed", ["shard"], registry=r
        )
        self.in_doubt_oldest = Gauge(
            "wallet_in_doubt_oldest_seconds",
            "Age of the shard's oldest prepared 2PC branch (0: none)",
            ["shard"],
            registry=r,
        )
        self.unfinished_oldest = Gauge(
            "wallet_unfinished_oldest_seconds",
            "Age of the oldest unfinished TC/C or Saga transfer whose debit shard is this one (0: none)",
            ["shard", "mode"],
            registry=r,
        )
        self.shard_servers = Gauge(
            "wallet_shard_servers", "Servers the shard's DSN names (1: not replicated)", ["shard"], registry=r
        )
        self.shard_synchronous_standbys = Gauge(
            "wallet_shard_synchronous_standbys",
            "Standbys that acknowledge the shard primary's commits (pg_stat_replication sync or quorum)",
            ["shard"],
            registry=r,
        )
        self.leader = Gauge(
            "wallet_leader", "1 if this process leads the role now (runs its singletons)", ["role"], registry=r
        )
        self.pool_size = Gauge("wallet_pool_connections", "Connections open in the shard's pool", ["shard"], registry=r)
        self.pool_in_use = Gauge(
            "wallet_pool_connections_in_use", "Connections lent out by the shard's pool", ["shard"], registry=r
        )
        self.pool_max = Gauge("wallet_pool_connections_max", "The shard pool's size limit", ["shard"], registry=r)
        self.shard_up = Gauge("wallet_shard_up", "1 if the shard answered this scrape", ["shard"], registry=r)
        self.inflight = Gauge("wallet_inflight_transfers", "Transaction ids this process is working on", registry=r)

    def _declare_ledger_state(self, r: CollectorRegistry) -> None:
        """What is read from each ledger server at a scrape."""
        self.ledger_up = Gauge(
            "wallet_ledger_up", "1 if the ledger server's primary answered this scrape", ["ledger"], registry=r
        )
        self.ledger_servers = Gauge(
            "wallet_ledger_servers", "Servers the ledger server's DSN names (1: not replicated)", ["ledger"], registry=r
        )
        self.ledger_synchronous_standbys = Gauge(
            "wallet_ledger_synchronous_standbys",
            "Standbys that acknowledge the ledger primary's commits",
            ["ledger"],
            registry=r,
        )
        self.ledger_appended = Gauge(
            "wallet_ledger_last_append_timestamp_seconds",
            "When the relay last appended an event to the stream (Unix time)",
            ["ledger", "stream"],
            registry=r,
        )
        self.verification_ok = Gauge(
            "wallet_ledger_verification_ok",
            "1 if the latest ledger verification on this server found every event chained and anchored",
            ["ledger"],
            registry=r,
        )
        self.verification_time = Gauge(
            "wallet_ledger_verification_timestamp_seconds",
            "When the latest ledger verification on this server finished (Unix time)",
            ["ledger"],
            registry=r,
        )

    def child(self, metric: Any, *labels: str) -> Any:
        key = (id(metric), *labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    def observe_request(self, route: str, status: int, seconds: float) -> None:
        self.child(self.requests, route, str(status)).inc()
        self.child(self.request_seconds, route).observe(seconds)

    def observe_transfer(self, kind: str, mode: str, outcome: str, seconds: float) -> None:
        self.child(self.transfers, kind, mode, outcome).inc()
        self.child(self.transfer_seconds, kind, mode).observe(seconds)

    def observe_batch(self, applier: str, size: int) -> None:
        """A BatchObserver (service/group_commit.py): every applied batch's size."""
        self.child(self.batch_size, applier).observe(size)

    async def refresh(self, service: WalletService) -> None:
        """Read what lives on the shards and the ledger servers: in-doubt branches, holds,
        outbox lag, replication, relay progress, the latest verification; pools."""
        self.inflight.set(len(service.inflight))
        self.leader.labels(LEADER_ROLE).set(1 if service.is_leader() else 0)
        steps = [fan_out(sorted(service.topology.shards), lambda shard: self._refresh_shard(service, shard))]
        if service.ledger is not None:
            partitions = service.ledger.partitions
            steps.append(fan_out(partitions.names(), lambda name: self._refresh_ledger(partitions[name])))
        await asyncio.gather(*steps)

    async def _refresh_shard(self, service: WalletService, shard: str) -> None:
        pool = service.pools.pools.get(shard)
        if pool is not None:
            self.pool_size.labels(shard).set(pool.get_size())
            self.pool_in_use.labels(shard).set(pool.get_size() - pool.get_idle_size())
            self.pool_max.labels(shard).set(pool.get_max_size())
        dsn = service.topology.shards[shard]
        servers = len(replication.members_of(dsn)) or 1
        self.shard_servers.labels(shard).set(servers)
        try:
            async with asyncio.timeout(SCRAPE_SHARD_TIMEOUT_S):
                # The pool reaches the shard's primary only (a replicated shard's DSN asks for
                # target_session_attrs=read-write): answering is having a primary.
                async with service.pools.connection(shard) as connection:
                    prepared = await two_phase_sql.select_prepared(connection)
                    unfinished = await phase_sql.unfinished_ages(connection, UNFINISHED_COUNT_MAX)
                    events, oldest_ms = await outbox_sql.outbox_lag(connection)
                    standbys = await replication.synchronous_standbys(connection) if servers > 1 else 0
        except (ShardError, TimeoutError, OSError) as error:
            log.warning("metrics: shard %s did not answer: %r", shard, error)
            self.shard_up.labels(shard).set(0)
            return
        self.shard_up.labels(shard).set(1)
        self.in_doubt.labels(shard).set(len(prepared))
        # select_prepared is oldest first
        self.in_doubt_oldest.labels(shard).set(prepared[0].age_ms / 1000 if prepared else 0)
        self.open_holds.labels(shard).set(unfinished.get("tcc", (0, 0))[0])
        self.unfinished_sagas.labels(shard).set(unfinished.get("saga", (0, 0))[0])
        for mode in UNFINISHED_MODES:
            self.unfinished_oldest.labels(shard, mode).set(unfinished.get(mode, (0, 0))[1] / 1000)
        self.outbox_events.labels(shard).set(events)
        self.outbox_lag.labels(shard).set((oldest_ms or 0) / 1000)
        self.shard_synchronous_standbys.labels(shard).set(standbys)

    async def _refresh_ledger(self, partition: Partition) -> None:
        name = partition.name
        servers = len(replication.members_of(partition.dsn)) or 1
        self.ledger_servers.labels(name).set(servers)
        try:
            async with asyncio.timeout(SCRAPE_SHARD_TIMEOUT_S):
                async with partition.connection() as connection:
                    appended = await health.last_appended(connection, partition.streams)
                    verification = await health.latest_verification(connection)
                    standbys = await replication.synchronous_standbys(connection) if servers > 1 else 0
        except (*UNREACHABLE, asyncpg.PostgresError, WalletError, TimeoutError) as error:
            log.warning("metrics: ledger server %s did not answer: %r", name, error)
            self.ledger_up.labels(name).set(0)
            return
        self.ledger_up.labels(name).set(1)
        self.ledger_synchronous_standbys.labels(name).set(standbys)
        for stream, appended_at_s in appended.items():
            self.ledger_appended.labels(name, stream).set(appended_at_s)
        if verification is not None:
            self.verification_ok.labels(name).set(1 if verification.ok else 0)
            self.verification_time.labels(name).set(verification.finished_at_s)

    def render(self) -> bytes:
        return generate_latest(self.registry)
