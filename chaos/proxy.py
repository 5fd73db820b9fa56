"""An asyncio TCP proxy between coordinators and one shard that delays, drops or cuts.

The coordinators' topology names the proxy's port for that shard; the proxy forwards
to the real server. Its faults are what a network does to a TCP connection:
  delay  every chunk waits `delay_ms` before it is forwarded (order is kept);
  drop   nothing is forwarded until healed (lost packets, seen through TCP as a stall
         that retransmission ends once the path is back);
  cut    every open connection is reset and new ones are refused until healed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

log = logging.getLogger("wallet.chaos.proxy")

CHUNK_BYTES = 64 * 1024
CONNECTIONS_MAX = 1_000
CONNECT_TIMEOUT_S = 5.0
DELAY_MS_MAX = 10_000
MODES = ("pass", "delay", "drop", "cut")


class FaultyProxy:
    def __init__(self, target_host: str, target_port: int, listen_host: str = "127.0.0.1") -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.listen_host = listen_host
        self.port = 0
        self.mode = "pass"
        self.delay_ms = 0
        self.server: asyncio.base_events.Server | None = None
        self.connections: set[asyncio.Task[None]] = set()
        self.healed = asyncio.Event()
        self.healed.set()
        self.connections_cut = 0

    async def start(self, port: int = 0) -> int:
        assert self.server is None, "proxy already started"
        self.server = await asyncio.start_server(self._serve, self.listen_host, port)
        self.port = self.server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            self.heal()
            await self._cut_all()
            await self.server.wait_closed()
            self.server = None

    # -- faults ----------------------------------------------------------------------------
    def delay(self, delay_ms: int) -> None:
        assert 0 < delay_ms <= DELAY_MS_MAX, f"delay_ms must be in 1..{DELAY_MS_MAX}"
        self.mode, self.delay_ms = "delay", delay_ms
        self.healed.set()

    def drop(self) -> None:
        self.mode = "drop"
        self.healed.clear()

    async def cut(self) -> None:
        self.mode = "cut"
        self.healed.set()
        await self._cut_all()

    def heal(self) -> None:
        self.mode, self.delay_ms = "pass", 0
        self.healed.set()

    # -- forwarding ------------------------------------------------------------------------
    async def _cut_all(self) -> None:
        tasks = list(self.connections)
        self.connections_cut += len(tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _serve(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        if self.mode == "cut" or len(self.connections) >= CONNECTIONS_MAX:
            _abort(client_writer)
            return
        task = asyncio.current_task()
        assert task is not None
        self.connections.add(task)
        server_writer: asyncio.StreamWriter | None = None
        try:
            server_reader, opened_writer = await asyncio.wait_for(
                asyncio.open_connection(self.target_host, self.target_port), CONNECT_TIMEOUT_S
            )
            server_writer = opened_writer
            pipes = [
                asyncio.create_task(self._pipe(client_reader, opened_writer)),
                asyncio.create_task(self._pipe(server_reader, client_writer)),
            ]
            try:
                await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for pipe in pipes:
                    pipe.cancel()
                await asyncio.gather(*pipes, return_exceptions=True)
        except (TimeoutError, OSError):
            pass
        except asyncio.CancelledError:
            pass  # cut: both sides are reset below
        finally:
            self.connections.discard(task)
            _abort(client_writer)
            if server_writer is not None:
                _abort(server_writer)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, ConnectionError):
            while True:
                data = await reader.read(CHUNK_BYTES)
                if not data:
                    return
                await self.healed.wait()  # drop: held until the path is back
                if self.mode == "delay":
                    await asyncio.sleep(self.delay_ms / 1000)
                writer.write(data)
                await writer.drain()


def _abort(writer: asyncio.StreamWriter) -> None:
    """Close with a reset, as a cut cable or a firewall would: no orderly goodbye."""
    transport = writer.transport
    if not transport.is_closing():
        transport.abort()
