"""The one bridge between the thread-based coordination side (kazoo, file watchers) and
the coordinator's asyncio loop:

  TopologyFollower  a store's watch -> the newest topology, handed to the loop
  Leadership        a kazoo lock that elects one process for the singletons (recovery
                    worker, ledger relay); SUSPENDED or LOST stops the leader at once
  LocalLeader       `serve --workers N` without ZooKeeper: the processes elect by an
                    exclusive file lock in their home
  AlwaysLeader      the embedded default (one coordinator process)
"""
from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import socket
import threading
from pathlib import Path
from typing import Awaitable, Callable

from shard_router.stores import TopologyStore
from shard_router.topology import Topology

log = logging.getLogger("wallet.zookeeper")

# How long one lock attempt blocks before the election thread checks for stop.
ACQUIRE_WAIT_S = 1.0
# How often a leader re-checks its session while it holds the lock.
HOLD_CHECK_S = 0.2


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


class LocalLeader:
    """Several coordinator processes on one machine without ZooKeeper (`wallet serve
    --workers N`): the one holding an exclusive lock on a file in the home leads. The kernel
    drops the lock when its process dies, so another takes over at its next check."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.identifier = f"{socket.gethostname()}:{os.getpid()}"
        self.handle: int | None = None

    def is_leader(self) -> bool:
        if self.handle is not None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(handle)
            return False
        self.handle = handle
        log.info("%s leads (lock %s)", self.identifier, self.path)
        return True

    def start(self) -> None:
        pass

    def stop(self) -> None:
        if self.handle is not None:
            os.close(self.handle)  # closing releases the lock
            self.handle = None


class AlwaysLeader:
    """One coordinator on one machine: it runs the singletons itself."""

    identifier = "local"

    def is_leader(self) -> bool:
        return True

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass


class Leadership:
    """One leader among the coordinators sharing `path`, by a kazoo Lock.

    is_leader() is true only while the lock is held AND the session is CONNECTED: when the
    session is SUSPENDED the leader stops acting at once (another may take over if the
    session then expires), and when it is LOST the lock is gone and is contended again."""

    def __init__(self, client, path: str, identifier: str | None = None) -> None:  # type: ignore[no-untyped-def]
        from kazoo.protocol.states import KazooState

        self.client = client
        self.path = path
        self.identifier = identifier or f"{socket.gethostname()}:{os.getpid()}"
        self.lock = client.Lock(path, self.identifier)
        self.held = threading.Event()
        self.lost = threading.Event()
        self.stopped = threading.Event()
        self.thread: threading.Thread | None = None
        self._connected = KazooState.CONNECTED

        def listen(state: str) -> None:
            if state == KazooState.LOST:
                self.lost.set()

        client.add_listener(listen)

    def is_leader(self) -> bool:
        return self.held.is_set() and not self.lost.is_set() and self.client.state == self._connected

    def leader(self) -> str | None:
        """The identifier of the current leader, as ZooKeeper sees it."""
        contenders = self.lock.contenders()
        return contenders[0] if contenders else None

    def start(self) -> None:
        assert self.thread is None, "Leadership.start() called twice"
        self.thread = threading.Thread(target=self._run, name=f"leadership:{self.path}", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.stopped.set()
        if self.thread is not None:
            self.thread.join(timeout=5)
        self.held.clear()
        try:
            self.lock.release()
        except Exception:  # the session may be gone already; the lock went with it
            pass

    def _run(self) -> None:
        from kazoo.exceptions import KazooException, LockTimeout

        while not self.stopped.is_set():
            self.lost.clear()
            try:
                if not self.lock.acquire(timeout=ACQUIRE_WAIT_S):
                    continue
            except LockTimeout:
                continue
            except KazooException as error:
                log.warning("leader election for %s: %r; retrying", self.path, error)
                self.stopped.wait(ACQUIRE_WAIT_S)
                continue
            log.info("%s leads %s", self.identifier, self.path)
            self.held.set()
            while not self.stopped.is_set() and not self.lost.is_set():
                self.stopped.wait(HOLD_CHECK_S)
            self.held.clear()
            log.warning("%s no longer leads %s", self.identifier, self.path)
            try:
                self.lock.release()
            except KazooException:
                pass
