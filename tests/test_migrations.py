"""Per-shard migrations: the model matches them, a DBA can run them per shard, drift is flagged."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.ext.asyncio import create_async_engine

from launchers.postgres import LocalCluster
from shards import migrate
from shards.schema import metadata
from tests.helpers import make_home

REPOSITORY = Path(__file__).resolve().parent.parent
WALLET = str(Path(sys.executable).parent / "wallet")
ALEMBIC = str(Path(sys.executable).parent / "alembic")


@pytest.fixture(scope="module")
def spare_cluster() -> Iterator[LocalCluster]:
    """Two unmigrated shards of our own: these tests migrate and downgrade them."""
    home = make_home("migrations")
    local = LocalCluster(home, shard_count=2)
    try:
        local.start()
        yield local
    finally:
        local.stop()
        shutil.rmtree(home, ignore_errors=True)


def run(command: list[str], cluster: LocalCluster) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "WALLET_HOME": str(cluster.home)}
    return subprocess.run(command, cwd=REPOSITORY, env=environment, capture_output=True, text=True, timeout=120)


def differences(dsn: str, model) -> list[object]:
    async def compare() -> list[object]:
        engine = create_async_engine(dsn.replace("postgresql://", "postgresql+asyncpg://"))
        try:
            async with engine.connect() as connection:
                return await connection.run_sync(lambda sync: compare_metadata(MigrationContext.configure(sync), model))
        finally:
            await engine.dispose()

    return asyncio.run(compare())


def test_model_matches_migrations(cluster: LocalCluster) -> None:
    """`alembic upgrade head` yields exactly the tables in shards/schema.py, and the ledger's
    migrations exactly those in ledger/schema.py."""
    from ledger.schema import metadata as ledger_metadata

    assert differences(cluster.topology.shards["shard0"], metadata) == []
    for server in cluster.topology.ledgers.values():
        assert differences(server.dsn, ledger_metadata) == []


def test_dba_flow_per_shard_then_all(spare_cluster: LocalCluster) -> None:
    """A DBA migrates one shard with alembic, sees the drift, then upgrades all."""
    before = run([WALLET, "db", "current"], spare_cluster)
    assert before.returncode == 1 and "DRIFT" in before.stdout and "not migrated" in before.stdout

    one = run([ALEMBIC, "-x", "shard=shard0", "upgrade", "head"], spare_cluster)
    assert one.returncode == 0, one.stderr
    partial = run([WALLET, "db", "current"], spare_cluster)
    assert partial.returncode == 1
    assert f"shard0\t{migrate.head_revision()}\thead" in partial.stdout and "shard1\t-\tnot migrated" in partial.stdout

    every = run([WALLET, "db", "upgrade", "--all"], spare_cluster)
    assert every.returncode == 0, every.stderr
    after = run([WALLET, "db", "current"], spare_cluster)
    assert after.returncode == 0 and "all shards at head" in after.stdout

    # Down and up again: the migration is reversible.
    down = run([ALEMBIC, "-x", "shard=shard1", "downgrade", "base"], spare_cluster)
    assert down.returncode == 0, down.stderr
    assert run([WALLET, "db", "current"], spare_cluster).returncode == 1
    assert run([WALLET, "db", "upgrade", "--shard", "shard1"], spare_cluster).returncode == 0
    assert run([WALLET, "db", "current"], spare_cluster).returncode == 0


def test_bad_shard_names_are_explained(spare_cluster: LocalCluster) -> None:
    """Naming a shard the topology lacks fails with a sentence, not a traceback."""
    wrong = run([WALLET, "db", "upgrade", "--shard", "shard9"], spare_cluster)
    assert wrong.returncode != 0 and "no shard 'shard9'" in wrong.stderr
    neither = run([WALLET, "db", "upgrade"], spare_cluster)
    assert neither.returncode != 0 and "--all or --shard" in neither.stderr
    alembic = run([ALEMBIC, "-x", "shard=shard9", "upgrade", "head"], spare_cluster)
    assert alembic.returncode != 0 and "shard9" in alembic.stderr


def test_unreachable_shard_is_reported_as_drift(spare_cluster: LocalCluster) -> None:
    """A stopped shard shows as unreachable in `wallet db current`, exit 1."""
    spare_cluster.stop_shard("shard1")
    try:
        current = run([WALLET, "db", "current"], spare_cluster)
        assert current.returncode == 1 and "unreachable" in current.stdout
    finally:
        spare_cluster.start_shard("shard1")
