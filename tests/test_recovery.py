"""The recovery worker: patient with young undecided batches, harmless when doubled, and
reachable from the CLI."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from pathlib import Path

import httpx

from coordinator.api.app import build_app
from coordinator.service.wallet import WalletService
from launchers.postgres import LocalCluster
from shard_router.topology import Topology
from tests.helpers import accounts_on, balances, bearer, kill_at, open_accounts, prepared_count

REPOSITORY = Path(__file__).resolve().parent.parent
WALLET = str(Path(sys.executable).parent / "wallet")


async def test_two_workers_at_once_and_young_batches(
    service: WalletService, topology: Topology, cluster: LocalCluster, tmp_path: Path
) -> None:
    """Young undecided batches are left to their coordinator; old ones are rolled back
    exactly once even by two workers racing."""
    sources = [a for shard in ("shard0", "shard1") for a in accounts_on(topology, shard, 2)]
    targets = [a for shard in ("shard2", "shard3") for a in accounts_on(topology, shard, 2)]
    await open_accounts(service, sources + targets, deposit="10.00")
    transfers = [
        {"from": s, "to": t, "amount": "1.00", "id": str(uuid.uuid4())} for s, t in zip(sources, targets, strict=True)
    ]
    kill_at(cluster.topology_path, transfers, "2pc.after_all_prepares", "2pc", tmp_path)
    left = await prepared_count(topology)
    assert left > 0

    patient = await service.recover()  # default: wait 10 s for a live coordinator
    assert patient.waiting == left and patient.rolled_back == 0
    # While prepared and undecided, GET says in-doubt for the transfers held by a prepared branch.
    doubtful = [t["id"] for t in transfers if await service.in_doubt(t["id"])]
    assert doubtful, "a prepared branch holds some transfer records"
    app = build_app(service.settings, service=service)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://wallet.test", headers=bearer()
    ) as client:
        shown = await client.get(f"/v1/transfers/{doubtful[0]}")
        assert shown.status_code == 202 and shown.json()["phase"] == "in-doubt"

    async with WalletService(topology, service.settings) as other:
        first, second = await asyncio.gather(service.recover(abort_after_ms=0), other.recover(abort_after_ms=0))
    assert not first.errors and not second.errors
    assert first.rolled_back + second.rolled_back == left and first.committed + second.committed == 0
    assert await prepared_count(topology) == 0
    assert not any([await service.in_doubt(t["id"]) for t in transfers])
    assert sum((await balances(service, sources + targets)).values()) == 1000 * len(sources + targets)


def test_wallet_recover_command(cluster: LocalCluster) -> None:
    """`wallet recover` runs one pass and reports what it did."""
    environment = {**os.environ, "WALLET_HOME": str(cluster.home)}
    completed = subprocess.run(
        [WALLET, "recover", "--abort-after-s", "0"],
        cwd=REPOSITORY,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.startswith("committed ")


async def test_old_commit_decisions_are_pruned_unless_a_branch_needs_them(
    service: WalletService, topology: Topology
) -> None:
    """Protects commit_decisions from growing forever, and 2PC from losing a decision it still
    needs: an old decision goes; one whose batch still has a prepared branch, or a recent one, stays."""
    from coordinator.protocols.recovery import DECISION_RETENTION_S_MIN, recover_once
    from shards import two_phase as two_phase_sql
    from shards.pool import connect

    gone, needed, recent = (str(uuid.uuid4()) for _ in range(3))
    decision_shard = await connect(topology.shards["shard0"])
    branch_shard = await connect(topology.shards["shard1"])
    gid = two_phase_sql.make_gid(needed, "shard0", "shard1")
    try:
        for batch_id in (gone, needed, recent):
            await two_phase_sql.insert_decision(decision_shard, batch_id, "commit")
        await decision_shard.execute(
            "UPDATE commit_decisions SET decided_at = now() - interval '2 days' WHERE batch_id = ANY($1::uuid[])",
            [gone, needed],
        )
        await two_phase_sql.begin(branch_shard)
        await two_phase_sql.prepare(branch_shard, gid)  # a branch of `needed`, still in doubt

        report = await recover_once(
            service.shards, sorted(topology.shards), decision_retention_s=DECISION_RETENTION_S_MIN
        )
        assert report.decisions_pruned == 1 and report.waiting == 1
        left = await two_phase_sql.select_decisions(decision_shard, [gone, needed, recent])
        assert set(left) == {needed, recent}
    finally:
        await two_phase_sql.rollback_prepared(branch_shard, gid)
        await decision_shard.execute(
            "DELETE FROM commit_decisions WHERE batch_id = ANY($1::uuid[])", [gone, needed, recent]
        )
        await decision_shard.close()
        await branch_shard.close()
