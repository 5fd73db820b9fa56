"""The processes `wallet serve` starts beside its engine, and keeps running: its HTTP processes
(api/front.py), each with a link to the engine, and the ledger relay (`wallet ledger relay
--follow`). One that dies while serving is started again, as a process manager would (the
relay after a pause: it may be failing on a ledger that is down). Each watches its end of a
socket pair with the engine and stops when the engine is gone, so none outlives it."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import sys
from dataclasses import dataclass, field

from coordinator.api.engine_link import EngineServer
from core.runtime.settings import Settings

log = logging.getLogger("wallet.serve")
STOP_WAIT_S = 30.0  # an HTTP process answers what it holds, then ends; past this it is killed
RELAY_RESTART_S = 1.0
RESTARTS_PER_CHILD_MAX = 1000  # a child that cannot stay up is not restarted forever


@dataclass
class Child:
    name: str
    process: asyncio.subprocess.Process
    link: socket.socket  # the engine's end: closing it tells the child to stop
    restarts: int = 0
    watcher: asyncio.Task[None] | None = field(default=None, repr=False)


class Children:
    def __init__(self, settings: Settings, listener: socket.socket, engine: EngineServer, relay: bool) -> None:
        self.settings = settings
        self.listener = listener
        self.engine = engine
        self.relay = relay
        self.children: list[Child] = []
        self.stopping = False

    async def start(self, http_processes: int) -> None:
        for index in range(http_processes):
            self._watch(await self._spawn_http(f"http-{index}"))
        if self.relay:
            self._watch(await self._spawn_relay())

    async def _spawn_http(self, name: str, restarts: int = 0) -> Child:
        engine_end, child_end = socket.socketpair()
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "coordinator.api.front",
            "--listen-fd",
            str(self.listener.fileno()),
            "--engine-fd",
            str(child_end.fileno()),
            pass_fds=(self.listener.fileno(), child_end.fileno()),
        )
        child_end.close()
        self.engine.attach(engine_end)
        return Child(name, process, engine_end, restarts)

    async def _spawn_relay(self, restarts: int = 0) -> Child:
        engine_end, child_end = socket.socketpair()
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "coordinator.cli.main",
            "ledger",
            "relay",
            "--follow",
            "--watch-fd",
            str(child_end.fileno()),
            pass_fds=(child_end.fileno(),),
        )
        child_end.close()
        return Child("relay", process, engine_end, restarts)

    def _watch(self, child: Child) -> None:
        self.children.append(child)
        child.watcher = asyncio.create_task(self._restart_when_gone(child), name=f"watch-{child.name}")

    async def _restart_when_gone(self, child: Child) -> None:
        code = await child.process.wait()
        if self.stopping:
            return
        self.children.remove(child)
        child.link.close()
        how = f"by signal {-code}" if code < 0 else f"with status {code}"
        if child.restarts >= RESTARTS_PER_CHILD_MAX:
            log.error("%s process died %s, %s times: not started again", child.name, how, child.restarts)
            return
        if child.name == "relay":
            log.warning("ledger relay process died %s; starting it again in %.1f s", how, RELAY_RESTART_S)
            await asyncio.sleep(RELAY_RESTART_S)
            self._watch(await self._spawn_relay(child.restarts + 1))
        else:
            log.warning("HTTP process %s died %s; starting it again", child.name, how)
            self._watch(await self._spawn_http(child.name, child.restarts + 1))

    async def stop(self) -> None:
        """The HTTP processes first (they answer what they hold, which needs the engine), then
        the relay."""
        self.stopping = True
        http = [child for child in self.children if child.name != "relay"]
        relay = [child for child in self.children if child.name == "relay"]
        for group in (http, relay):
            for child in group:
                if child.process.returncode is None:
                    child.process.send_signal(signal.SIGTERM)
            for child in group:
                try:
                    async with asyncio.timeout(STOP_WAIT_S):
                        await child.process.wait()
                except TimeoutError:
                    log.warning("%s process did not stop within %.0f s; killed", child.name, STOP_WAIT_S)
                    child.process.kill()
                    await child.process.wait()
                child.link.close()
        for child in self.children:
            if child.watcher is not None:
                child.watcher.cancel()
        self.children = []
