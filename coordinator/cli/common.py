"""What the command groups share: JSON output, the topology, a service for one command."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

from coordinator.cluster.coordination import open_topology_store
from coordinator.service.wallet import WalletService
from core.domain.errors import ConfigurationError
from core.runtime import event_loop
from core.runtime.settings import Settings
from ledger.service import LedgerService
from shard_router.topology import Topology


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, default=str))


def load_topology(settings: Settings) -> Topology:
    store = open_topology_store(settings)
    try:
        return store.load()
    finally:
        store.close()


def with_service(settings: Settings, action: Callable[[WalletService], Awaitable[Any]]) -> Any:
    """Open a service on the stored topology, run `action` with it, close it."""

    async def run() -> Any:
        store = await asyncio.to_thread(open_topology_store, settings)
        try:
            topology = await asyncio.to_thread(store.load)
            async with WalletService(topology, settings, store) as service:
                return await action(service)
        finally:
            await asyncio.to_thread(store.close)

    return event_loop.run(run())


def ledger_of(service: WalletService) -> LedgerService:
    if service.ledger is None:
        raise ConfigurationError("the topology names no ledger database: add one (`ledger.dsn`) to use `wallet ledger`")
    return service.ledger
