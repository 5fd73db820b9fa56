"""A topology store's watch (kazoo's or the file poller's thread) bridged to the asyncio loop:
the newest topology, handed to the service."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from shard_router.stores import TopologyStore
from shard_router.topology import Topology

log = logging.getLogger("wallet.topology")


class TopologyFollower:
    """Keeps only the newest topology the watch delivered (a bounded, one-slot mailbox):
    a burst of versions is applied once, at the last one."""

    def __init__(self, store: TopologyStore, on_topology: Callable[[Topology], Awaitable[object]]) -> None:
        self.store = store
        self.on_topology = on_topology
        self.latest: Topology | None = None
        self.changed = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.stop_watch: Callable[[], None] | None = None

    def start(self) -> None:
        loop = asyncio.get_running_loop()

        def deliver(topology: Topology) -> None:  # on the watcher's thread
            loop.call_soon_threadsafe(self._offer, topology)

        self.stop_watch = self.store.watch(deliver)
        self.task = asyncio.create_task(self._run(), name="topology-follower")

    def _offer(self, topology: Topology) -> None:
        if self.latest is None or topology.version > self.latest.version:
            self.latest = topology
            self.changed.set()

    async def _run(self) -> None:
        while True:
            await self.changed.wait()
            self.changed.clear()
            assert self.latest is not None
            try:
                await self.on_topology(self.latest)
            except Exception:
                log.exception("could not switch to topology version %s; keeping the current one", self.latest.version)

    async def stop(self) -> None:
        if self.stop_watch is not None:
            self.stop_watch()
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
            self.task = None
