"""The REST floor: what HTTP costs here before any wallet work. One starlette route that reads
the transfer body, decodes the same JSON, checks the bearer token's presence and answers a
small JSON, under the same server as `wallet serve` (uvicorn, uvloop, httptools, no access
log), driven by the same wrk script as the REST point.

    python -m bench.rest_floor PORT
"""

from __future__ import annotations

import sys

import msgspec
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

ANSWER = b'{"status":"success"}'


async def transfer(request: Request) -> Response:
    body = msgspec.json.decode(await request.body())
    if not request.headers.get("authorization") or not isinstance(body, dict) or "transaction_id" not in body:
        return Response(b'{"code":"malformed_request"}', status_code=400, media_type="application/json")
    return Response(ANSWER, media_type="application/json")


async def healthz(request: Request) -> Response:
    return Response(b'{"status":"ok"}', media_type="application/json")


async def readyz(request: Request) -> Response:
    """The shape of `wallet serve`'s answer (the same client waits for both)."""
    return Response(b'{"status":"ready","checks":{},"topology_version":0}', media_type="application/json")


def build_app() -> Starlette:
    return Starlette(
        routes=[
            Route("/v1/wallet/balance_transfer", transfer, methods=["POST"]),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
        ]
    )


def main(argv: list[str]) -> int:
    uvicorn.run(build_app(), host="127.0.0.1", port=int(argv[0]), log_level="warning", access_log=False, lifespan="off")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
