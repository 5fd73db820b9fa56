"""A coordinator process for fault tests: submits cross-shard transfers and is killed
by its own WALLET_FAULT_POINT. Usage: python -m tests.victim TOPOLOGY TRANSFERS_JSON [MODE]"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from coordinator.service.wallet import WalletService
from core.domain.errors import WalletError
from core.runtime import fault_points
from core.runtime.settings import BatchLimits, Settings
from shard_router.file_store import FileTopologyStore


async def main(topology_path: str, transfers_path: str, mode: str) -> None:
    topology = FileTopologyStore(Path(topology_path)).load()
    transfers = json.loads(Path(transfers_path).read_text())
    # One batch for the whole load, so it spans every shard: after the first COMMIT
    # PREPARED, other branches are still prepared when the process dies.
    settings = Settings(limits=BatchLimits(batch_wait_ms=50))
    fault_points.arm(Settings.from_environment().fault_point)
    async with WalletService(topology, settings) as service:

        async def send(t: dict[str, str]) -> None:
            try:
                await service.transfer(t["from"], t["to"], t["amount"], "USD", t["id"], mode)
            except WalletError:
                pass

        await asyncio.gather(*(send(t) for t in transfers))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else "2pc"))
    sys.exit(3)  # reaching here means the fault point was never hit
