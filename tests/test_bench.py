"""The benchmarks still run end to end (tiny sizes: this checks they work, not how fast)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parent.parent


@pytest.mark.cluster
def test_transfer_bench_runs_and_conserves(tmp_path: Path) -> None:
    """`wallet bench` measures every point, its baselines, and checks conservation."""
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "coordinator.cli.main",
            "bench",
            "--accounts",
            "400",
            "--seconds",
            "0.5",
            "--concurrency",
            "4",
            "--batch",
            "20",
            "--batch-clients",
            "2",
            "--no-rest",
            "--sustained-seconds",
            "1",
            "--out",
            str(tmp_path),
        ],
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["conserved"] and results["pgbench_tps"] > 0
    names = {point["name"] for point in results["points"]}
    assert names == {
        "engine, one transfer per call",
        "batch API (in-process)",
        "unbatched, one transfer per call",
        "batch API, Zipf 1.0 receivers",
        "batch API, one merchant receives 20%",
        "sustained: batch API with the relay process",
    }
    assert all(point["conserved"] for point in results["points"]), "conservation is checked after every point"
    assert results["floor"]["transfers"] > 0 and "of the floor" in completed.stdout
    summary = results["summary"]
    assert {
        "pgbench_tps",
        "floor_tps",
        "batch_2pc_tps",
        "batch_tcc_tps",
        "batch_saga_tps",
        "engine_1024_tps",
        "rest_tps",
        "rest_p99_ms",
        "rest_floor_tps",
        "zipf_2pc_tps",
        "batch_2pc_coordinator_cpu_us",
        "batch_2pc_postgres_cpu_us",
        "rest_coordinator_cpu_us",
        "rest_postgres_cpu_us",
        "rest_floor_coordinator_cpu_us",
        "rest_defaults_tps",
        "rest_defaults_p99_ms",
        "rest_1024_tps",
        "rest_1024_p99_ms",
        "sustained_tps",
        "sustained_outbox_lag_s",
    } <= set(summary)
    assert summary["floor_tps"] > 0 and summary["batch_2pc_tps"] > 0 and summary["rest_tps"] is None  # --no-rest
    assert summary["sustained_tps"] > 0 and summary["sustained_outbox_lag_s"] is not None
    assert set(results["round_trips"]) == {"local", "2pc", "tcc", "saga"}
    assert all(cost["statements"] >= cost["round_trips"] > 0 for cost in results["round_trips"].values())
    assert all(point["transfers"] > 0 for point in results["points"])
    assert "x pgbench" in completed.stdout and "machines" in completed.stdout
    # Where the CPU went, per point, and the floor under every statement (bench/cpu.py).
    assert all(point["coordinator_cpu_us"] > 0 and point["postgres_cpu_us"] > 0 for point in results["points"])
    assert all(figure > 0 for figure in results["statement_cpu_us"])
    assert "CPU per transfer" in completed.stdout and "SELECT 1 round trip" in completed.stdout


@pytest.mark.cluster
def test_ledger_bench_runs(tmp_path: Path) -> None:
    """`wallet bench ledger` builds a chained ledger and replays it both ways, equal results."""
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "coordinator.cli.main",
            "bench",
            "ledger",
            "--events",
            "3000",
            "--accounts",
            "200",
            "--relay-events",
            "20000",
            "--out",
            str(tmp_path),
        ],
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    figures = json.loads((tmp_path / "ledger.json").read_text())
    assert figures["events"] == 3000 and figures["accounts"] == 200
    for key in (
        "events",
        "replay_events_per_s",
        "snapshot_tail_s",
        "account_at_ms",
        "peak_rss_mib",
        "relay_events_per_s",
        "relay_coordinator_cpu_us",
        "relay_postgres_cpu_us",
        "relay_2_ledgers_events_per_s",
        "hash_python_events_per_s",
        "hash_sql_events_per_s",
    ):
        assert isinstance(figures[key], (int, float)) and figures[key] > 0, key
    assert "two ledger servers" in completed.stdout


def test_workload_transaction_ids_are_unique_version_4_uuids() -> None:
    import uuid

    from bench.workload import Workload
    from shard_router.topology import Topology

    topology = Topology.even({"shard0": "postgresql://h/0", "shard1": "postgresql://h/1"})
    workload = Workload(topology, [f"acct-{i}" for i in range(50)], 0.5, 0, 1)
    ids = [workload.transaction_id() for _ in range(20_000)]
    assert len(set(ids)) == len(ids)
    parsed = [uuid.UUID(i) for i in ids]
    assert all(u.version == 4 and u.variant == uuid.RFC_4122 and str(u) == i for u, i in zip(parsed, ids, strict=True))


async def test_the_rest_floor_answers_as_the_server_does_where_the_client_reads_it() -> None:
    """The benchmark's client waits for the REST floor as for `wallet serve`: its readiness and
    transfer answers have the shapes the client builds."""
    import httpx

    from bench.rest_floor import build_app
    from wallet_client.models import Ready, build

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app()), base_url="http://floor") as client:
        ready = build(Ready, (await client.get("/readyz")).json())
        assert ready.status == "ready"
        answer = await client.post(
            "/v1/wallet/balance_transfer", json={"transaction_id": "x"}, headers={"authorization": "Bearer t"}
        )
        assert answer.status_code == 200 and answer.json() == {"status": "success"}
