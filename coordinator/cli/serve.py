"""`wallet serve`: the REST API, one process or several sharing the port."""
from __future__ import annotations

import argparse
import os
from typing import Any

from coordinator.api.auth import TOKEN_TTL_S_DEFAULT, TokenVerifier, issue_token, load_secret
from coordinator.cli.dev import DEFAULT_SHARD_COUNT, shard_count, start_local_cluster
from coordinator.domain.errors import ConfigurationError
from coordinator.runtime.logs import configure_logging
from coordinator.runtime.settings import WORKERS_MAX, Settings


def port_number(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port number in 1..65535, got {text!r}")
    return int(text)


def worker_count(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= WORKERS_MAX:
        raise argparse.ArgumentTypeError(f"must be a whole number in 1..{WORKERS_MAX}, got {text!r}")
    return int(text)


def command_serve(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from coordinator.api.app import build_app

    configure_logging(settings.log_format, settings.log_level)
    cluster = start_local_cluster(settings, args.shards) if args.local else None
    try:
        host, port = args.host or settings.host, args.port or settings.port
        workers = args.workers or settings.workers
        TokenVerifier.from_settings(settings)  # a missing or weak secret is refused before anything listens
        app = build_app(settings) if workers == 1 else None
        print(f"serving the wallet API on http://{host}:{port} (Ctrl-C stops)", flush=True)
        if args.local:
            secret = load_secret(settings, create=True)
            if secret is None:
                raise ConfigurationError("no token secret: set WALLET_AUTH_SECRET or run `wallet dev up`")
            token = issue_token(secret, "admin", "admin")
            print(f"admin token (valid {TOKEN_TTL_S_DEFAULT // 86400} days): {token}\n"
                  f"  curl -H 'Authorization: Bearer {token}' http://{host}:{port}/v1/accounts/alice", flush=True)
        if app is not None:
            uvicorn.run(app, host=host, port=port, log_level="warning", lifespan="on")
        else:  # processes sharing the port; each builds its app (and settings) from the environment
            os.environ["WALLET_WORKERS"] = str(workers)
            uvicorn.run("coordinator.api.app:build_app", factory=True, workers=workers, host=host, port=port,
                        log_level="warning", lifespan="on")
    finally:
        if cluster is not None:
            cluster.stop()
            print("local cluster stopped", flush=True)
    return 0


def add_commands(commands: Any) -> None:
    serve = commands.add_parser("serve", help="serve the REST API")
    serve.add_argument("--local", action="store_true", help="also start the local cluster, migrate it, and stop it on exit")
    serve.add_argument("--shards", type=shard_count, default=DEFAULT_SHARD_COUNT, help="shards for --local (default 4)")
    serve.add_argument("--host", help="listen address (default WALLET_HOST or 127.0.0.1)")
    serve.add_argument("--port", type=port_number, help="listen port (default WALLET_PORT or 8000)")
    serve.add_argument("--workers", type=worker_count, help="coordinator processes sharing the port (default "
                       "WALLET_WORKERS or 1); one of them runs recovery and the relay")
    serve.set_defaults(handler=command_serve)
