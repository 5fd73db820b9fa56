"""The topology a coordinator routes by: switched to newer versions as they arrive, and read
again when a shard refuses accounts it no longer serves."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

from core.domain.errors import WalletError
from shard_router.stores import TopologyStore
from shard_router.topology import Topology
from shards.errors import AccountsMoved

log = logging.getLogger("wallet.service")
Result = TypeVar("Result")

# A shard refuses accounts it no longer serves (a slot migration moved them): re-read the
# topology and route again, at most this many times, waiting a little longer each time
# (a migration's flip is short, but the new version reaches us after it).
REROUTE_ATTEMPTS_MAX = 12
REROUTE_WAIT_MS = 100


class ShardAddresses(Protocol):
    """Where the router's switch sends a shard's new address (shards/pool.py's ShardPools)."""

    async def set_address(self, name: str, dsn: str) -> None: ...


class Router:
    def __init__(self, topology: Topology, pools: ShardAddresses, store: TopologyStore | None = None) -> None:
        self.topology = topology
        self.pools = pools
        # Where a newer topology is read when a shard refuses a stale route (None: never).
        self.store = store
        # Told of each shard a switch adds, under the switch's lock (starts its appliers).
        self.on_shard_added: list[Callable[[str], None]] = []
        # Told of each topology switched to, under the switch's lock (the ledger's servers).
        self.on_switch: list[Callable[[Topology], Awaitable[None]]] = []
        self.switching = asyncio.Lock()

    def shard_of(self, account_id: str) -> str:
        return self.topology.shard_of(account_id)

    def shards(self) -> list[str]:
        return sorted(self.topology.shards)

    async def switch(self, topology: Topology) -> bool:
        """Route by `topology` from now on, if it is newer: new shards get pools (and, through
        on_shard_added, appliers), moved addresses new pools. Shards dropped from the topology
        keep their pools until close (nothing routes to them). True if it switched."""
        async with self.switching:
            if topology.version <= self.topology.version:
                return False
            for shard, dsn in sorted(topology.shards.items()):
                added = shard not in self.topology.shards
                await self.pools.set_address(shard, dsn)
                if added:
                    for hook in self.on_shard_added:
                        hook(shard)
            for follower in self.on_switch:
                await follower(topology)
            log.info("topology version %s -> %s", self.topology.version, topology.version)
            self.topology = topology
            return True

    async def refresh(self) -> bool:
        """Read the store now (not only wait for its watch). True if a newer version came."""
        if self.store is None:
            return False
        store = self.store
        return await self.switch(await asyncio.to_thread(store.load))

    async def rerouting(
        self, action: Callable[[], Awaitable[Result]], moved: Callable[[Result], bool] = lambda answer: False
    ) -> Result:
        """Run `action` (which routes by self.topology) again while a shard refuses accounts it
        does not serve (it raises AccountsMoved, or `moved(answer)` says so), reading a newer
        topology in between. A refusal wrote nothing, so running it again is safe."""
        for attempt in range(REROUTE_ATTEMPTS_MAX):
            try:
                answer = await action()
                if not moved(answer):
                    return answer
                log.info("rerouting after a refusal (topology %s)", self.topology.version)
            except AccountsMoved as refusal:
                log.info("rerouting after a refusal (topology %s): %s", self.topology.version, refusal)
            if self.store is None:
                break  # nowhere to learn a newer topology from
            if not await self.refresh():
                await asyncio.sleep(REROUTE_WAIT_MS * (attempt + 1) / 1000)
        raise WalletError(
            "shard_unavailable", "the account is moving between shards; retry with the same transaction_id"
        )
