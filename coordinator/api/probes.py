"""What operators, load balancers and clients ask of the service itself: up, ready (every
shard and the ledger at the migration head), metrics, the OpenAPI document, and what a
problem code means."""
from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from coordinator.api import schemas
from coordinator.api.access import service_of
from coordinator.api.bodies import path
from coordinator.api.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE, Metrics
from coordinator.api.problems import problem, problem_type_view
from coordinator.api.views import json_response
from coordinator.runtime.fan_out import fan_out
from coordinator.service.wallet import WalletService
from shards import migrate, replication

READY_CHECK_TIMEOUT_S = 5.0
# A replicated shard whose primary has no synchronous standby still takes writes
# (synchronous_mode_strict off: launchers/patroni.py says why), so the service stays ready;
# the check names the shard, and the alert is the operator's.
NO_SYNCHRONOUS_STANDBY = "ok, degraded: no synchronous standby (writes continue on the primary alone)"


async def healthz(request: Request) -> Response:
    return json_response(schemas.Health("ok"))


async def readyz(request: Request) -> Response:
    """Ready when the topology is loaded and every shard (and the ledger) answers at the
    migration head."""
    service: WalletService | None = getattr(request.app.state, "service", None)
    if service is None:
        return problem(503, "shard_unavailable", "the topology is not loaded yet")
    heads = request.app.state.heads
    databases = [(name, dsn, "shard") for name, dsn in sorted(service.topology.shards.items())]
    if service.topology.ledger:
        databases.append(("ledger", service.topology.ledger, "ledger"))

    async def one(name: str, dsn: str, target: str) -> str:
        try:
            async with asyncio.timeout(READY_CHECK_TIMEOUT_S):
                found = await migrate.read_revision(name, dsn, target)
                if found.error:
                    return found.error
                if found.revision != heads[target]:
                    return f"at {found.revision}, head is {heads[target]}"
                if replication.is_replicated(dsn) and await replication.synchronous_standbys_at(dsn) == 0:
                    return NO_SYNCHRONOUS_STANDBY
                return "ok"
        except TimeoutError:
            return "unreachable: no answer"

    answers = await fan_out(databases, lambda database: one(*database))
    checks = {name: answers.results.get(database) or f"failed: {answers.errors[database]!r}"
              for database in databases for name in database[:1]}
    if any(not answer.startswith("ok") for answer in checks.values()):
        response = problem(503, "shard_unavailable", "not ready: " + "; ".join(
            f"{name}: {answer}" for name, answer in checks.items() if not answer.startswith("ok")))
        return response
    return json_response(schemas.Ready("ready", checks, service.topology.version))



async def metrics_endpoint(request: Request) -> Response:
    metrics: Metrics = request.app.state.metrics
    await metrics.refresh(service_of(request))
    return Response(metrics.render(), media_type=METRICS_CONTENT_TYPE)


async def openapi_endpoint(request: Request) -> Response:
    return JSONResponse(request.app.state.openapi)


async def problem_type(request: Request) -> Response:
    """GET /problems/{code}: what the code means (a problem's `type` resolves here)."""
    code = path(request, schemas.ProblemPath).code
    found = problem_type_view(code)
    if found is None:
        return problem(404, "not_found", f"no problem code {code!r}")
    return json_response(found)
