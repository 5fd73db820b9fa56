"""The REST API (starlette): the routes over a backend (api/backend.py): the service here, or the engine."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from coordinator.api import accounts, money, openapi, probes, request_spans, transfers
from coordinator.api.access import guarded
from coordinator.api.auth import OwnerCache, TokenVerifier
from coordinator.api.backend import Backend, LocalBackend
from coordinator.api.metrics import Metrics
from coordinator.api.problems import on_http_error, on_unexpected
from coordinator.service.wallet import WalletService
from core.runtime import tracing
from core.runtime.settings import Settings
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


class TracedWalletApp(WalletApp):
    """The app with a span per request (api/request_spans.py): what build_app makes when
    tracing is on, so that with it off no request pays for it."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await request_spans.traced(super().__call__, scope, receive, send)


def route_of(operation: openapi.Operation) -> Route:
    if operation.operation_id in MONEY_HANDLERS:
        return Route(
            operation.path,
            money.as_endpoint(operation.path, MONEY_HANDLERS[operation.operation_id]),
            methods=[operation.method.upper()],
        )
    return Route(
        operation.path,
        guarded(
            HANDLERS[operation.operation_id],
            operation.path,
            admin=operation.access == "admin",
            public=operation.access == "public",
        ),
        methods=[operation.method.upper()],
    )


def heads() -> dict[str, str]:
    """The migration heads a ready shard and ledger are at."""
    return {"shard": migrate.head_revision(), "ledger": migrate.head_revision("ledger")}


def build_app(settings: Settings, backend: Backend | None = None, service: WalletService | None = None) -> WalletApp:
    """The app over `backend`, or over `service` in this process (the caller owns its lifecycle)."""
    verifier = TokenVerifier.from_settings(settings)  # a missing or weak secret is refused first
    if backend is None:
        assert service is not None, "build_app needs a backend or a service"
        backend = LocalBackend(service, settings, Metrics(), heads())
    routes = [route_of(op) for op in openapi.OPERATIONS]
    routes.append(Route("/openapi.json", guarded(probes.openapi_endpoint, "/openapi.json", public=True)))
    app = Starlette(routes=routes, exception_handlers={HTTPException: on_http_error, Exception: on_unexpected})
    app.state.verifier = verifier
    app.state.owners = OwnerCache()
    app.state.openapi = openapi.document()
    app.state.backend = backend
    return TracedWalletApp(app) if tracing.enabled else WalletApp(app)
