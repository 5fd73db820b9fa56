"""What both alembic environments (shards, ledger) share: the topology named by -x or the
environment, the asyncpg URL, and running the migrations online or offline."""
from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

from sqlalchemy import MetaData
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from shard_router.file_store import FileTopologyStore
from shard_router.topology import Topology


def topology_from(arguments: dict[str, str]) -> tuple[Topology, Path]:
    home = Path(os.environ.get("WALLET_HOME", ".wallet"))
    path = Path(arguments.get("topology") or os.environ.get("WALLET_TOPOLOGY") or home / "topology.json")
    return FileTopologyStore(path).load(), path


def async_url(dsn: str) -> str:
    for prefix in ("postgresql://", "postgres://"):
        if dsn.startswith(prefix):
            return "postgresql+asyncpg://" + dsn[len(prefix):]
    return dsn


def run(context: Any, metadata: MetaData, dsn: str) -> None:
    """One database per run; asyncpg is the only driver (no second one for alembic)."""
    if context.is_offline_mode():
        context.configure(url=async_url(dsn), target_metadata=metadata, literal_binds=True)
        with context.begin_transaction():
            context.run_migrations()
        return

    def migrate(connection) -> None:  # type: ignore[no-untyped-def]
        context.configure(connection=connection, target_metadata=metadata, transaction_per_migration=True)
        with context.begin_transaction():
            context.run_migrations()

    async def online() -> None:
        engine = create_async_engine(async_url(dsn), poolclass=NullPool)
        try:
            async with engine.connect() as connection:
                await connection.run_sync(migrate)
                await connection.commit()
        finally:
            await engine.dispose()

    asyncio.run(online())
