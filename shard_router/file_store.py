"""The embedded-default topology store: one JSON file, replaced atomically."""

from __future__ import annotations

import json
import os
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

from shard_router.topology import Topology, TopologyError

# A file has no change notification we can rely on everywhere: watchers poll its stat.
WATCH_POLL_MS = 250


class FileTopologyStore:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def exists(self) -> bool:
        return self.path.exists()

    def load(self) -> Topology:
        try:
            document = json.loads(self.path.read_text())
        except FileNotFoundError as error:
            raise TopologyError(
                f"no topology file at {self.path}; run `wallet dev up` or set WALLET_TOPOLOGY"
            ) from error
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise TopologyError(f"topology file {self.path} is not JSON: {error}") from error
        return Topology.from_document(document)

    def save(self, topology: Topology) -> None:
        """Write a whole new version. Refuses to go backwards, so two writers cannot
        silently undo each other."""
        if self.path.exists():
            current = self.load()
            if topology.version <= current.version and topology != current:
                raise TopologyError(f"topology version {topology.version} is not newer than stored {current.version}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=self.path.parent, prefix=".topology.")
        try:
            with os.fdopen(handle, "w") as file:
                json.dump(topology.to_document(), file, indent=2)
                file.write("\n")
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, self.path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    def watch(self, callback: Callable[[Topology], None]) -> Callable[[], None]:
        """Calls `callback` (on a watcher thread) with the stored topology now and after
        every change. Returns a function that stops the watch."""
        stopped = threading.Event()

        def poll() -> None:
            seen: tuple[int, int] | None = None
            while not stopped.is_set():
                try:
                    stat = self.path.stat()
                    signature = (stat.st_mtime_ns, stat.st_size)
                    if signature != seen:
                        seen = signature
                        callback(self.load())
                except (OSError, TopologyError):
                    pass  # missing or half-written elsewhere: keep the last good one
                stopped.wait(WATCH_POLL_MS / 1000)

        threading.Thread(target=poll, name=f"topology-watch:{self.path.name}", daemon=True).start()
        return stopped.set

    def close(self) -> None:
        pass  # nothing held between calls
