"""Which topology store a process uses: ZooKeeper when hosts are configured, else the
JSON file (the embedded default for one machine). Both keep one contract:

  exists() -> bool; load() -> Topology; save(Topology) (newer versions only);
  watch(callback) -> stop; close()
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from shard_router.file_store import FileTopologyStore
from shard_router.topology import Topology, TopologyError

SESSION_TIMEOUT_MS_DEFAULT = 10_000
CONNECT_TIMEOUT_S = 15


class TopologyStore(Protocol):
    def exists(self) -> bool: ...
    def load(self) -> Topology: ...
    def save(self, topology: Topology) -> None: ...
    def watch(self, callback: Callable[[Topology], None]) -> Callable[[], None]: ...
    def close(self) -> None: ...


def connect_zookeeper(hosts: str, session_timeout_ms: int = SESSION_TIMEOUT_MS_DEFAULT) -> Any:  # a KazooClient
    from kazoo.client import KazooClient
    from kazoo.handlers.threading import KazooTimeoutError
    from kazoo.retry import KazooRetry

    client = KazooClient(
        hosts=hosts,
        timeout=session_timeout_ms / 1000,
        connection_retry=KazooRetry(max_tries=-1, max_delay=2),  # reconnect for as long as it takes
        command_retry=KazooRetry(max_tries=5, max_delay=2),
    )
    try:
        client.start(timeout=CONNECT_TIMEOUT_S)
    except KazooTimeoutError as error:
        client.close()
        raise TopologyError(f"cannot reach ZooKeeper at {hosts} within {CONNECT_TIMEOUT_S} s") from error
    return client


def open_store(
    topology_path: Path,
    zk_hosts: str | None = None,
    zk_root: str = "/wallet",
    session_timeout_ms: int = SESSION_TIMEOUT_MS_DEFAULT,
) -> TopologyStore:
    if not zk_hosts:
        return FileTopologyStore(topology_path)
    from shard_router.zookeeper_store import ZooKeeperTopologyStore

    return ZooKeeperTopologyStore(connect_zookeeper(zk_hosts, session_timeout_ms), zk_root, owns_client=True)
