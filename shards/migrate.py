"""Run and inspect the per-shard alembic migrations programmatically (for `wallet db`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import asyncpg
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

from shard_router.topology import Topology
from shards.pool import explain

REPOSITORY_ROOT = Path(__file__).resolve().parent.parent


def alembic_config(dsn: str, target: str = "shard", owned_slots: list[int] | None = None) -> Config:
    """target "shard" (a shard's schema) or "ledger" (the event ledger's database)."""
    assert target in ("shard", "ledger"), "target is shard or ledger"
    section = "alembic" if target == "shard" else "ledger"
    config = Config(str(REPOSITORY_ROOT / "alembic.ini"), ini_section=section)
    location = REPOSITORY_ROOT / "migrations" if target == "shard" else REPOSITORY_ROOT / "migrations" / "ledger"
    config.set_main_option("script_location", str(location))
    config.attributes["dsn"] = dsn
    if owned_slots is not None:
        config.attributes["owned_slots"] = list(owned_slots)
    return config


def head_revision(target: str = "shard") -> str:
    heads = ScriptDirectory.from_config(alembic_config("postgresql://unused", target)).get_heads()
    assert len(heads) == 1, f"migrations must have one head, found {heads}: merge them"
    return heads[0]


def upgrade(dsn: str, revision: str = "head", target: str = "shard", owned_slots: list[int] | None = None) -> None:
    """Must not be called from a running event loop (env.py runs its own). A shard's
    `owned_slots` (from the topology) seed its fence table in revision 0004."""
    command.upgrade(alembic_config(dsn, target, owned_slots), revision)


def upgrade_all(topology: Topology) -> None:
    """Every shard, then every ledger server, to head."""
    for shard in sorted(topology.shards):
        upgrade_shard(topology, shard)
    for server in topology.ledgers.values():
        upgrade(server.dsn, target="ledger")


def upgrade_shard(topology: Topology, shard: str, revision: str = "head") -> None:
    assert shard in topology.shards, f"shard {shard!r} is not in the topology; it has {sorted(topology.shards)}"
    upgrade(topology.shards[shard], revision, owned_slots=topology.slots_of(shard))


@dataclass(frozen=True)
class ShardRevision:
    shard: str
    revision: str | None  # None: never migrated
    error: str | None = None
    target: str = "shard"

    @property
    def current(self) -> bool:
        return self.error is None and self.revision == head_revision(self.target)


async def read_revision(shard: str, dsn: str, target: str = "shard") -> ShardRevision:
    try:
        connection = await asyncpg.connect(dsn, timeout=5)
    except (
        OSError,
        TimeoutError,
        asyncpg.PostgresError,
        asyncpg.InterfaceError,
        asyncpg.TargetServerAttributeNotMatched,
    ) as error:
        said = explain(dsn, error) if isinstance(error, asyncpg.TargetServerAttributeNotMatched) else str(error)
        return ShardRevision(shard, None, f"unreachable: {said}", target)
    try:
        exists = await connection.fetchval("SELECT to_regclass('alembic_version') IS NOT NULL")
        if not exists:
            return ShardRevision(shard, None, target=target)
        return ShardRevision(shard, await connection.fetchval("SELECT version_num FROM alembic_version"), target=target)
    finally:
        await connection.close()
