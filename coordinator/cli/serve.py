"""`wallet serve`: the REST API, as processes.

  this process    the engine: the service (rounds, recovery), the rate limits, the in-flight
                  ids and the metrics. It binds the port before anything else, so a busy
                  port is refused with nothing started.
  HTTP processes  (--workers N, default 1) parse HTTP and ask the engine (api/front.py, over
                  api/engine_link.py): the engine's round trips never wait behind HTTP work
                  on one event loop (docs/figures.md)
  relay process   the ledger relay, its signed checkpoints and daily snapshots (`wallet
                  ledger relay --follow`), unless WALLET_RELAY=off

`--workers 0` serves HTTP on the engine's own event loop instead (kept to measure against).
The children end with the engine: an HTTP process or the relay whose link to it closes stops.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import logging
import signal
import socket
import threading
from typing import Any

from coordinator.api.auth import TOKEN_TTL_S_DEFAULT, TokenVerifier, issue_token, load_secret
from coordinator.cli.children import Children
from coordinator.cli.dev import DEFAULT_SHARD_COUNT, shard_count, start_local_cluster
from core.domain.errors import ConfigurationError
from core.runtime import event_loop, tracing
from core.runtime.logs import configure_logging
from core.runtime.settings import WORKERS_MAX, Settings

log = logging.getLogger("wallet.serve")
LISTEN_BACKLOG = 2048
SERVING_WAIT_S = 60.0


def port_number(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port number in 1..65535, got {text!r}")
    return int(text)


def worker_count(text: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= WORKERS_MAX:
        raise argparse.ArgumentTypeError(f"must be a whole number in 0..{WORKERS_MAX}, got {text!r}")
    return int(text)


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, or a refusal naming the port and the setting that changes it."""
    listener = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((host, port))
    except OSError as error:
        listener.close()
        if error.errno == errno.EADDRINUSE:
            raise ConfigurationError(
                f"port {port} on {host} is in use: stop what holds it, or serve on another with WALLET_PORT (or --port)"
            ) from None
        raise ConfigurationError(
            f"cannot listen on {host}:{port}: {error.strerror}; choose another with "
            "WALLET_HOST/WALLET_PORT (or --host/--port)"
        ) from None
    listener.listen(LISTEN_BACKLOG)
    listener.setblocking(False)
    return listener


def command_serve(args: argparse.Namespace, settings: Settings) -> int:
    # Ctrl-C or SIGTERM from the first moment on means "stop": while starting, it is noted and
    # honoured once the service is up (nothing is left half started).
    stopping = threading.Event()
    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, lambda *_: stopping.set())
    configure_logging(settings.log_format, settings.log_level)
    tracing.configure(settings, "engine")
    host, port = args.host or settings.host, args.port or settings.port
    workers = settings.workers if args.workers is None else args.workers
    listener = bind(host, port)  # before any server starts: a busy port leaves nothing running
    cluster = start_local_cluster(settings, args.shards) if args.local else None
    try:
        TokenVerifier.from_settings(settings)  # a missing or weak secret is refused before anything serves
        url = f"http://{host}:{port}"

        def announce() -> None:
            print(f"serving the wallet API on {url} (Ctrl-C stops)", flush=True)
            if args.local:
                print_first_steps(settings, url)

        event_loop.run(serve(settings, listener, workers, announce, stopping))
    finally:
        tracing.stop()  # what is queued is exported
        listener.close()
        if cluster is not None:
            cluster.stop()
            print("local cluster stopped", flush=True)
    return 0


def print_first_steps(settings: Settings, url: str) -> None:
    secret = load_secret(settings, create=True)
    if secret is None:
        raise ConfigurationError("no token secret: set WALLET_AUTH_SECRET or run `wallet dev up`")
    token = issue_token(secret, "admin", "admin")
    print(
        f"admin token (valid {TOKEN_TTL_S_DEFAULT // 86400} days): {token}\n"
        f"  curl -H 'Authorization: Bearer {token}' -XPOST {url}/v1/accounts "
        """-d '{"account_id":"alice","owner":"alice","currency":"USD"}'""",
        flush=True,
    )


async def serve(
    settings: Settings, listener: socket.socket, workers: int, announce: Any, stopping: threading.Event
) -> None:
    from coordinator.api.app import build_app, heads
    from coordinator.api.backend import LocalBackend
    from coordinator.api.engine_link import EngineServer
    from coordinator.api.front import QuietServer
    from coordinator.api.metrics import Metrics
    from coordinator.cluster.coordination import open_coordination
    from coordinator.cluster.topology_follower import TopologyFollower
    from coordinator.service.wallet import WalletService

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for number in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(number, stop.set)
    if stopping.is_set():
        stop.set()
    coordination = await open_coordination(settings)
    try:
        topology = await asyncio.to_thread(coordination.store.load)
        service = await WalletService(topology, settings, coordination.store, coordination.is_leader).open(
            run_recovery=True
        )
        follower = TopologyFollower(coordination.store, service.switch_topology)
        follower.start()
        try:
            backend = LocalBackend(service, settings, Metrics(), heads())
            engine = EngineServer(backend)
            children = Children(settings, listener, engine, relay=bool(topology.ledgers) and settings.run_relay)
            try:
                await children.start(workers)
                if workers == 0:
                    await QuietServer.of(build_app(settings, backend=backend)).serve_until(listener, stop, announce)
                else:
                    async with asyncio.timeout(SERVING_WAIT_S):
                        await engine.wait_serving(workers)
                    announce()
                    await stop.wait()
            finally:
                await children.stop()
                await engine.close()
        finally:
            await follower.stop()
            await service.close()
    finally:
        await coordination.close()


def add_commands(commands: Any) -> None:
    serve_command = commands.add_parser("serve", help="serve the REST API")
    serve_command.add_argument(
        "--local", action="store_true", help="also start the local cluster, migrate it, and stop it on exit"
    )
    serve_command.add_argument(
        "--shards", type=shard_count, default=DEFAULT_SHARD_COUNT, help="shards for --local (default 4)"
    )
    serve_command.add_argument("--host", help="listen address (default WALLET_HOST or 127.0.0.1)")
    serve_command.add_argument("--port", type=port_number, help="listen port (default WALLET_PORT or 8000)")
    serve_command.add_argument(
        "--workers",
        type=worker_count,
        help="HTTP processes in front of the engine (default WALLET_WORKERS or 1); 0 serves "
        "HTTP in the engine's own process",
    )
    serve_command.set_defaults(handler=command_serve)
