"""The production topology store: one znode holding the topology document, replaced by
compare-and-set on the znode's version, watched by every coordinator.

Layout under the root (default /wallet):
  <root>/topology       the document (shards, slot ranges, overrides, version)
  <root>/leaders/...    leader-election locks (coordinator/cluster/leadership.py)
"""

from __future__ import annotations

import json
from collections.abc import Callable

from kazoo.client import KazooClient
from kazoo.exceptions import BadVersionError, NodeExistsError, NoNodeError
from kazoo.recipe.watchers import DataWatch

from shard_router.topology import Topology, TopologyError

# ZooKeeper's default jute.maxbuffer is 1 MiB; stay clear of it (overrides are the only
# part that grows: about 40 bytes each).
DOCUMENT_BYTES_MAX = 900_000


def encode(topology: Topology) -> bytes:
    data = json.dumps(topology.to_document(), indent=1, sort_keys=True).encode("utf-8")
    if len(data) > DOCUMENT_BYTES_MAX:
        raise TopologyError(f"topology document is {len(data)} bytes, over {DOCUMENT_BYTES_MAX}: too many overrides")
    return data


def decode(data: bytes, where: str) -> Topology:
    try:
        return Topology.from_document(json.loads(data.decode("utf-8")))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise TopologyError(f"topology at {where} is not JSON: {error}") from error


class ZooKeeperTopologyStore:
    def __init__(self, client: KazooClient, root: str = "/wallet", owns_client: bool = False) -> None:
        assert root.startswith("/") and not root.endswith("/"), "the root znode is an absolute path like /wallet"
        self.client = client
        self.root = root
        self.path = f"{root}/topology"
        self.owns_client = owns_client

    def exists(self) -> bool:
        return self.client.exists(self.path) is not None

    def load(self) -> Topology:
        try:
            data, _ = self.client.get(self.path)
        except NoNodeError as error:
            raise TopologyError(f"no topology at zookeeper {self.path}; run `wallet topology init`") from error
        return decode(data, self.path)

    def save(self, topology: Topology) -> None:
        """Write a whole new version. Refuses to go backwards, and refuses if another writer
        changed the znode since we read it (compare-and-set on its version)."""
        data = encode(topology)
        try:
            stored, stat = self.client.get(self.path)
        except NoNodeError:
            try:
                self.client.create(self.path, data, makepath=True)
                return
            except NodeExistsError as error:
                raise TopologyError("another writer created the topology at the same time; reload and retry") from error
        current = decode(stored, self.path)
        if topology == current:
            return
        if topology.version <= current.version:
            raise TopologyError(f"topology version {topology.version} is not newer than stored {current.version}")
        try:
            self.client.set(self.path, data, version=stat.version)
        except BadVersionError as error:
            raise TopologyError("the topology changed while this version was written; reload and retry") from error

    def watch(self, callback: Callable[[Topology], None]) -> Callable[[], None]:
        """Calls `callback` (on kazoo's thread) with the stored topology now and after every
        change. Returns a function that stops the watch."""
        stopped = False

        def changed(data: bytes | None, stat: object) -> bool | None:
            if stopped:
                return False  # kazoo removes the watch
            if data:
                try:
                    callback(decode(data, self.path))
                except TopologyError:
                    pass  # a bad document is refused by load() too; keep the last good one
            return None

        DataWatch(self.client, self.path, changed)

        def stop() -> None:
            nonlocal stopped
            stopped = True

        return stop

    def close(self) -> None:
        if self.owns_client:
            self.client.stop()
            self.client.close()
