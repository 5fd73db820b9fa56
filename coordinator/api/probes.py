"""What operators, load balancers and clients ask of the service itself: up, ready (every
shard and the ledger at the migration head), metrics, the OpenAPI document, and what a
problem code means."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from coordinator.api import schemas
from coordinator.api.access import backend_of
from coordinator.api.backend import Backend
from coordinator.api.bodies import path
from coordinator.api.problems import problem, problem_type_view
from coordinator.api.views import json_response


async def healthz(request: Request) -> Response:
    return json_response(schemas.Health("ok"))


async def readyz(request: Request) -> Response:
    """Ready when the topology is loaded and every shard (and the ledger) answers at the
    migration head (api/readiness.py, asked of the engine)."""
    backend: Backend | None = getattr(request.app.state, "backend", None)
    if backend is None:
        return problem(503, "shard_unavailable", "the topology is not loaded yet")
    status, body, media = await backend.ready()
    return Response(body, status, media_type=media)


async def metrics_endpoint(request: Request) -> Response:
    status, body, media = await backend_of(request).metrics()
    return Response(body, status, media_type=media)


async def openapi_endpoint(request: Request) -> Response:
    return JSONResponse(request.app.state.openapi)


async def problem_type(request: Request) -> Response:
    """GET /problems/{code}: what the code means (a problem's `type` resolves here)."""
    code = path(request, schemas.ProblemPath).code
    found = problem_type_view(code)
    if found is None:
        return problem(404, "not_found", f"no problem code {code!r}")
    return json_response(found)
