"""What a coordinator process shares with its peers: where the topology is stored (and
the watch that follows it), and who runs a singleton, by role: the recovery worker (the
engine of `wallet serve`, role `singletons`) and the ledger relay (its relay process, role
`relay`).

ZooKeeper when WALLET_ZK_HOSTS is set; else the topology file and an exclusive lock on a
file in the home per role (the embedded default: one machine; `wallet serve` processes
sharing a home run each singleton once).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from coordinator.cluster.leadership import Leadership, LocalLeader, NeverLeader
from core.runtime.settings import Settings
from shard_router.stores import TopologyStore, open_store
from shard_router.topology import TopologyError

LEADER_ROLE = "singletons"  # the recovery worker, in the engine
RELAY_ROLE = "relay"  # the ledger relay, its checkpoints and snapshots, in the relay process


@dataclass
class Coordination:
    store: TopologyStore
    leadership: Any  # Leadership or AlwaysLeader

    def is_leader(self) -> bool:
        leads: bool = self.leadership.is_leader()
        return leads

    async def close(self) -> None:
        await asyncio.to_thread(self.leadership.stop)
        await asyncio.to_thread(self.store.close)


def open_topology_store(settings: Settings) -> TopologyStore:
    return open_store(settings.topology_path, settings.zk_hosts, settings.zk_root, settings.zk_session_timeout_ms)


async def open_coordination(settings: Settings, elect: bool = True, role: str = LEADER_ROLE) -> Coordination:
    store = await asyncio.to_thread(open_topology_store, settings)
    if not elect:
        return Coordination(store, NeverLeader())
    if not settings.zk_hosts:
        return Coordination(store, LocalLeader(settings.home / f"{role}.lock"))
    client = getattr(store, "client", None)
    if client is None:
        raise TopologyError("a ZooKeeper store is needed for leader election")
    leadership = Leadership(client, f"{settings.zk_root}/leaders/{role}")
    leadership.start()
    return Coordination(store, leadership)
