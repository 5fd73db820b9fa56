"""Alembic environment: one shard per run, chosen by -x shard=<name> or -x dsn=<url>."""
from __future__ import annotations

import asyncio
import os
from pathlib import Path

from alembic import context
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from shards.schema import metadata

config = context.config


def shard_dsn() -> str:
    arguments = context.get_x_argument(as_dictionary=True)
    dsn = arguments.get("dsn") or config.attributes.get("dsn")
    if dsn:
        return dsn
    shard = arguments.get("shard")
    assert shard, "choose a shard: alembic -x shard=<name> upgrade head (or -x dsn=postgresql://...)"
    from shard_router.file_store import FileTopologyStore

    home = Path(os.environ.get("WALLET_HOME", ".wallet"))
    path = Path(arguments.get("topology") or os.environ.get("WALLET_TOPOLOGY") or home / "topology.json")
    topology = FileTopologyStore(path).load()
    assert shard in topology.shards, f"shard {shard!r} is not in {path}; it has {sorted(topology.shards)}"
    return topology.shards[shard]


def async_url(dsn: str) -> str:
    for prefix in ("postgresql://", "postgres://"):
        if dsn.startswith(prefix):
            return "postgresql+asyncpg://" + dsn[len(prefix):]
    return dsn


def run_sync_migrations(connection) -> None:  # type: ignore[no-untyped-def]
    context.configure(connection=connection, target_metadata=metadata, transaction_per_migration=True)
    with context.begin_transaction():
        context.run_migrations()


async def run_async_migrations() -> None:
    engine = create_async_engine(async_url(shard_dsn()), poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(run_sync_migrations)
            await connection.commit()
    finally:
        await engine.dispose()


if context.is_offline_mode():
    context.configure(url=async_url(shard_dsn()), target_metadata=metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(run_async_migrations())
