"""An HTTP process of `wallet serve`: the API over the engine's link (api/engine_link.py).

`wallet serve` binds the port and makes a socket pair for each HTTP process, then starts it:

    python -m coordinator.api.front --listen-fd N --engine-fd M

It parses HTTP, checks tokens and bodies, and asks the engine for the rest. It ends when
told to (SIGTERM, SIGINT: requests in flight are answered first) or when the engine goes
away (their answers are 503, `shard_unavailable`: retry with the same transaction id).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import socket
import sys
from collections.abc import Callable, Iterator

import uvicorn
from starlette.types import ASGIApp

from coordinator.api.app import build_app
from coordinator.api.engine_link import RemoteBackend
from core.runtime import event_loop, tracing
from core.runtime.logs import configure_logging
from core.runtime.settings import Settings

STARTED_WAIT_S = 30.0


class QuietServer(uvicorn.Server):
    """uvicorn's server, minus its own signal handling: the process running it decides when
    it stops (and stops what else it runs in order)."""

    @classmethod
    def of(cls, app: ASGIApp) -> QuietServer:
        return cls(uvicorn.Config(app, lifespan="off", log_level="warning", access_log=False))

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def serve_until(self, listener: socket.socket, stop: asyncio.Event, started: Callable[[], object]) -> None:
        """Serve on `listener` until `stop` is set; `started()` once it accepts requests."""
        serving = asyncio.create_task(self.serve(sockets=[listener]))
        async with asyncio.timeout(STARTED_WAIT_S):
            while not self.started and not serving.done():
                await asyncio.sleep(0.01)
        if self.started:
            started()
            stopping = asyncio.create_task(stop.wait())
            await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            self.should_exit = True
        await serving


async def serve_http(settings: Settings, listen_fd: int, engine_fd: int) -> None:
    backend = await RemoteBackend(socket.socket(fileno=engine_fd), settings.default_mode).open()
    server = QuietServer.of(build_app(settings, backend=backend))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for number in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(number, stop.set)
    backend.on_lost = stop.set  # the engine went away: what is in flight was answered 503
    try:
        await server.serve_until(
            socket.socket(fileno=listen_fd), stop, lambda: asyncio.ensure_future(backend.hello())
        )  # the engine says "serving"
    finally:
        await backend.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m coordinator.api.front", description=__doc__)
    parser.add_argument("--listen-fd", type=int, required=True, help="the listening socket `wallet serve` bound")
    parser.add_argument("--engine-fd", type=int, required=True, help="this process's end of its link to the engine")
    args = parser.parse_args(argv)
    settings = Settings.from_environment()
    configure_logging(settings.log_format, settings.log_level)
    tracing.configure(settings, "http")
    try:
        event_loop.run(serve_http(settings, args.listen_fd, args.engine_fd))
    finally:
        tracing.stop()  # what is queued is exported
    return 0


if __name__ == "__main__":
    sys.exit(main())
