"""The bank invariant under concurrency and faults (issue 7), in a short seeded run.

Real processes: the session's shards and ledger server, two `wallet serve` coordinators,
a faulty TCP proxy in front of shard1. One cycle of the fault schedule: coordinator
SIGKILL and restart, shard crash and restart, shard SIGSTOP past the timeouts, proxy
delay, drop and cut, and a coordinator armed at every named fault point of every
protocol (2pc.*, tcc.*, saga.*, relay.*), each reached under concurrent load. The
isolated, one-step-at-a-time versions of the fault-point kills are
tests/test_two_phase_faults.py and tests/test_branch_faults.py; this run adds
concurrency, the other faults, and the checker (chaos/checker.py).
Longer runs: `wallet chaos --minutes N --seed S`.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from chaos.runner import ChaosConfig, run_chaos
from chaos.schedule import KINDS
from chaos.workload import MODES
from core.runtime.fault_points import SERVING_FAULT_POINTS
from launchers.postgres import LocalCluster

SEED = 7
WALLET = str(Path(sys.executable).parent / "wallet")


async def test_bank_invariant_holds_under_faults(cluster: LocalCluster) -> None:
    """Every fault kind and fault point once, transfers in every mode: zero anomalies."""
    config = ChaosConfig(
        seed=SEED,
        cover_only=True,
        hold_scale=0.5,
        workers=6,
        accounts_per_shard=4,
        say=lambda line: print(line, flush=True),
    )
    report = await run_chaos(config, cluster)
    print(report.table())
    assert report.anomalies == [], report.table()
    assert all(report.faults[kind] >= 1 for kind in KINDS), report.faults
    assert sorted(set(report.points_reached)) == sorted(SERVING_FAULT_POINTS), report.points_missed
    assert all(report.succeeded[mode] > 0 and report.failed[mode] > 0 for mode in MODES), report.table()
    assert sum(report.timed_out.values()) > 0, "the faults must leave some client without an answer"
    assert report.check.reads_checked > 0


@pytest.mark.cluster
def test_checker_catches_the_naive_two_update_transfer() -> None:
    """The design the seeds reject (debit, then credit, two autocommit updates, a crash
    between, no idempotency) must fail the same checker: it can fail. Run as `wallet chaos
    --naive` on a throwaway cluster of its own, so the command line is tested too."""
    completed = subprocess.run(
        [WALLET, "chaos", "--naive", "--minutes", "0.07", "--seed", str(SEED), "--shards", "2"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert completed.returncode == 1, completed.stdout + completed.stderr
    counts = dict(re.findall(r"^  (\w+): (\d+)$", completed.stdout, re.M))
    assert counts.get("money_destroyed") == "1", completed.stdout
    assert int(counts.get("balance_mismatch", 0)) > 0 and int(counts.get("succeeded_not_applied", 0)) > 0, (
        completed.stdout
    )
    assert int(counts.get("read_unexplained", 0)) > 0, completed.stdout
