"""Prometheus metrics: counted as requests happen, plus shard state read at scrape time.

One registry per app (tests build several apps in one process).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from core.runtime.fan_out import fan_out
from shards import outbox as outbox_sql
from shards import phase_state as phase_sql
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
SCRAPE_SHARD_TIMEOUT_S = 2.0


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
        self.pool_size = Gauge("wallet_pool_connections", "Connections open in the shard's pool", ["shard"], registry=r)
        self.pool_in_use = Gauge(
            "wallet_pool_connections_in_use", "Connections lent out by the shard's pool", ["shard"], registry=r
        )
        self.pool_max = Gauge("wallet_pool_connections_max", "The shard pool's size limit", ["shard"], registry=r)
        self.shard_up = Gauge("wallet_shard_up", "1 if the shard answered this scrape", ["shard"], registry=r)
        self.inflight = Gauge("wallet_inflight_transfers", "Transaction ids this process is working on", registry=r)
        # Labelled children, kept: `labels()` locks and looks up on every call, four times a
        # request. Every label value is from a fixed set (routes, statuses, modes, codes).
        self._children: dict[tuple[object, ...], Any] = {}

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
        """Read what lives on the shards: in-doubt branches, holds, outbox lag, pools."""
        self.inflight.set(len(service.inflight))
        await fan_out(sorted(service.topology.shards), lambda shard: self._refresh_shard(service, shard))

    async def _refresh_shard(self, service: WalletService, shard: str) -> None:
        pool = service.pools.pools.get(shard)
        if pool is not None:
            self.pool_size.labels(shard).set(pool.get_size())
            self.pool_in_use.labels(shard).set(pool.get_size() - pool.get_idle_size())
            self.pool_max.labels(shard).set(pool.get_max_size())
        try:
            async with asyncio.timeout(SCRAPE_SHARD_TIMEOUT_S):
                async with service.pools.connection(shard) as connection:
                    prepared = await two_phase_sql.select_prepared(connection)
                    unfinished = await phase_sql.select_unfinished(connection, 0, UNFINISHED_COUNT_MAX)
                    events, oldest_ms = await outbox_sql.outbox_lag(connection)
        except (ShardError, TimeoutError, OSError) as error:
            log.warning("metrics: shard %s did not answer: %r", shard, error)
            self.shard_up.labels(shard).set(0)
            return
        self.shard_up.labels(shard).set(1)
        self.in_doubt.labels(shard).set(len(prepared))
        self.open_holds.labels(shard).set(sum(1 for phase in unfinished if phase.transfer.mode == "tcc"))
        self.unfinished_sagas.labels(shard).set(sum(1 for phase in unfinished if phase.transfer.mode == "saga"))
        self.outbox_events.labels(shard).set(events)
        self.outbox_lag.labels(shard).set((oldest_ms or 0) / 1000)

    def render(self) -> bytes:
        return generate_latest(self.registry)
