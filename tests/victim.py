"""A coordinator process for fault tests: submits cross-shard transfers and is killed
by its own WALLET_FAULT_POINT. Usage: python -m tests.victim TOPOLOGY TRANSFERS_JSON [MODE]"""
from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from coordinator.runtime import fault_points
from coordinator.runtime.settings import Settings
from coordinator.domain.errors import WalletError
from coordinator.runtime.settings import BatchLimits
from coordinator.service.wallet import WalletService
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


def kill_at(topology_path: Path, transfers: list[dict[str, str]], fault_point: str, mode: str, workdir: Path) -> None:
    """Run a coordinator subprocess over `transfers` until it SIGKILLs itself at `fault_point`."""
    import os
    import signal
    import subprocess

    plan = workdir / f"transfers-{fault_point}.json"
    plan.write_text(json.dumps(transfers))
    victim = subprocess.run(
        [sys.executable, "-m", "tests.victim", str(topology_path), str(plan), mode],
        cwd=Path(__file__).resolve().parent.parent, env={**os.environ, "WALLET_FAULT_POINT": fault_point},
        capture_output=True, text=True, timeout=120,
    )
    assert victim.returncode == -signal.SIGKILL, f"the victim was not killed at {fault_point}: {victim.stderr}"


def cross_shard_transfers(topology, accounts: list[str], count: int, seed: object) -> list[dict[str, str]]:  # type: ignore[no-untyped-def]
    """`count` random transfers between accounts on different shards, each with a fresh id."""
    import random
    import uuid

    rng = random.Random(seed)
    transfers = []
    for _ in range(count):
        source, target = rng.sample(accounts, 2)
        while topology.shard_of(source) == topology.shard_of(target):
            source, target = rng.sample(accounts, 2)
        transfers.append({"from": source, "to": target, "amount": f"{rng.randint(1, 500) / 100:.2f}", "id": str(uuid.uuid4())})
    return transfers
