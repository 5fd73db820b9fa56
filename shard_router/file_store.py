"""The embedded-default topology store: one JSON file, replaced atomically."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from shard_router.topology import Topology, TopologyError


class FileTopologyStore:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def exists(self) -> bool:
        return self.path.exists()

    def load(self) -> Topology:
        try:
            document = json.loads(self.path.read_text())
        except FileNotFoundError as error:
            raise TopologyError(f"no topology file at {self.path}; run `wallet dev up` or set WALLET_TOPOLOGY") from error
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise TopologyError(f"topology file {self.path} is not JSON: {error}") from error
        return Topology.from_document(document)

    def save(self, topology: Topology) -> None:
        """Write a whole new version. Refuses to go backwards, so two writers cannot
        silently undo each other."""
        if self.path.exists():
            current = self.load()
            if topology.version <= current.version and topology != current:
                raise TopologyError(
                    f"topology version {topology.version} is not newer than stored {current.version}"
                )
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
