"""The REST API (starlette): the routes, and the service's lifecycle inside the app's."""
from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from typing import AsyncIterator, Awaitable, Callable

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from coordinator.api import accounts, money, openapi, probes, transfers
from coordinator.api.access import guarded
from coordinator.api.auth import OwnerCache, TokenVerifier
from coordinator.api.metrics import Metrics
from coordinator.api.problems import on_http_error, on_unexpected
from coordinator.api.rate_limits import RateLimiter
from coordinator.cluster.coordination import open_coordination
from coordinator.cluster.topology_follower import TopologyFollower
from coordinator.runtime import fault_points
from coordinator.runtime.settings import Settings
from coordinator.service.wallet import WalletService
from shards import migrate


# operationId (api/openapi.py) -> handler: one route per operation of the document. The two
# money routes are plain ASGI (api/money.py), answered before starlette; the rest are starlette's.
MONEY_HANDLERS: dict[str, money.Handler] = {"transfer": money.transfer, "deposit": money.deposit}
HANDLERS: dict[str, Callable[[Request], Awaitable[Response]]] = {
    "transferBatch": transfers.transfer_batch,
    "createAccount": accounts.create_account,
    "getAccount": accounts.get_account,
    "getBalanceAt": accounts.get_balance_at,
    "getHistory": accounts.get_history,
    "getTransfer": transfers.get_transfer,
    "transferEvents": transfers.transfer_events,
    "health": probes.healthz,
    "ready": probes.readyz,
    "metrics": probes.metrics_endpoint,
    "problemType": probes.problem_type,
}


class WalletApp(money.MoneyRoutes):
    """The service's ASGI app: the money routes (api/money.py), then starlette for the rest."""

    def __init__(self, starlette: Starlette) -> None:
        super().__init__(starlette, starlette.state)
        self.starlette = starlette

    @property
    def routes(self) -> list[BaseRoute]:
        return self.starlette.routes


def route_of(operation: openapi.Operation) -> Route:
    if operation.operation_id in MONEY_HANDLERS:
        return Route(operation.path, money.as_endpoint(operation.path, MONEY_HANDLERS[operation.operation_id]),
                     methods=[operation.method.upper()])
    return Route(operation.path, guarded(HANDLERS[operation.operation_id], operation.path,
                                         admin=operation.access == "admin", public=operation.access == "public"),
                 methods=[operation.method.upper()])


def build_app(settings: Settings | None = None, service: WalletService | None = None) -> WalletApp:
    """With `service`, the caller owns its lifecycle (tests); otherwise the app opens one."""
    if settings is None:  # this process's own app (`wallet serve --workers N` builds one per process)
        settings = Settings.from_environment()
        fault_points.arm(settings.fault_point)
    verifier = TokenVerifier.from_settings(settings)
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if service is not None:
            app.state.service = service
            yield
            return
        coordination = await open_coordination(settings)
        try:
            topology = await asyncio.to_thread(coordination.store.load)
            opened = await WalletService(topology, settings, coordination.store, coordination.is_leader).open(
                run_recovery=True, run_relay=settings.run_relay)
            opened.observe_batches(metrics.observe_batch)
            follower = TopologyFollower(coordination.store, opened.switch_topology)
            follower.start()
            try:
                app.state.service = opened
                yield
            finally:
                await follower.stop()
                await opened.close()
        finally:
            await coordination.close()

    routes = [route_of(op) for op in openapi.OPERATIONS]
    routes.append(Route("/openapi.json", guarded(probes.openapi_endpoint, "/openapi.json", public=True)))
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={
            HTTPException: on_http_error,
            Exception: on_unexpected,
        },
    )
    app.state.verifier = verifier
    app.state.limiter = RateLimiter(settings.rate_per_s, settings.rate_burst)
    app.state.admin_limiter = RateLimiter(settings.admin_rate_per_s, settings.admin_rate_burst)
    app.state.owners = OwnerCache()
    app.state.metrics = metrics
    app.state.openapi = openapi.document()
    app.state.heads = {"shard": migrate.head_revision(), "ledger": migrate.head_revision("ledger")}
    if service is not None:
        app.state.service = service
        service.observe_batches(metrics.observe_batch)
    return WalletApp(app)
