"""Who runs a singleton role (`singletons`: the recovery worker; `relay`: the ledger relay,
its checkpoints and daily snapshot), bridged from kazoo's threads to the asyncio loop:

  Leadership        a kazoo lock that elects one process for a role; SUSPENDED or LOST
                    stops the leader at once
  LocalLeader       without ZooKeeper (one machine): the processes of a role elect by an
                    exclusive lock on a file in their home
  AlwaysLeader      a process that leads alone (tests)
"""

from __future__ import annotations

import fcntl
import logging
import os
import socket
import threading
from pathlib import Path
from typing import Any

log = logging.getLogger("wallet.leadership")

# How long one lock attempt blocks before the election thread checks for stop.
ACQUIRE_WAIT_S = 1.0
# How often a leader re-checks its session while it holds the lock.
HOLD_CHECK_S = 0.2


class LocalLeader:
    """Processes on one machine without ZooKeeper (`wallet serve` processes sharing a home):
    the one holding an exclusive lock on the role's file in the home leads. The kernel drops
    the lock when its process dies, so another takes over at its next check."""

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


class NeverLeader(AlwaysLeader):
    """A one-shot command (CLI) that must not run the singletons."""

    def is_leader(self) -> bool:
        return False


class Leadership:
    """One leader among the coordinators sharing `path`, by a kazoo Lock.

    is_leader() is true only while the lock is held AND the session is CONNECTED: when the
    session is SUSPENDED the leader stops acting at once (another may take over if the
    session then expires), and when it is LOST the lock is gone and is contended again."""

    def __init__(self, client: Any, path: str, identifier: str | None = None) -> None:  # a KazooClient (untyped)
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
