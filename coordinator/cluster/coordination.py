"""What a coordinator process shares with its peers: where the topology is stored (and
the watch that follows it), and who runs the singletons (recovery worker, ledger relay).

ZooKeeper when WALLET_ZK_HOSTS is set; else the topology file and a process that always
leads (the embedded default: one machine).
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from coordinator.runtime.settings import Settings
from coordinator.cluster.leadership import AlwaysLeader, Leadership, LocalLeader, NeverLeader
from shard_router.stores import TopologyStore, open_store
from shard_router.topology import TopologyError

LEADER_ROLE = "singletons"


@dataclass
class Coordination:
    store: TopologyStore
    leadership: Any  # Leadership or AlwaysLeader

    def is_leader(self) -> bool:
        return self.leadership.is_leader()

    async def close(self) -> None:
        await asyncio.to_thread(self.leadership.stop)
        await asyncio.to_thread(self.store.close)


def open_topology_store(settings: Settings) -> TopologyStore:
    return open_store(settings.topology_path, settings.zk_hosts, settings.zk_root, settings.zk_session_timeout_ms)


async def open_coordination(settings: Settings, elect: bool = True) -> Coordination:
    store = await asyncio.to_thread(open_topology_store, settings)
    if not elect:
        return Coordination(store, NeverLeader())
    if not settings.zk_hosts:
        # One machine. `serve --workers N`: its processes elect by a file lock in the home.
        # A single process leads alone (separate `wallet serve` processes on one home each
        # run the singletons, which is safe, only wasteful).
        leader = LocalLeader(settings.home / "leader.lock") if settings.workers > 1 else AlwaysLeader()
        return Coordination(store, leader)
    client = getattr(store, "client", None)
    if client is None:
        raise TopologyError("a ZooKeeper store is needed for leader election")
    leadership = Leadership(client, f"{settings.zk_root}/leaders/{LEADER_ROLE}")
    leadership.start()
    return Coordination(store, leadership)
