"""Alembic environment for the event ledger's database (not a shard)."""
from __future__ import annotations

import asyncio
import os
from pathlib import Path

from alembic import context
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from ledger.schema import metadata

config = context.config


def ledger_dsn() -> str:
    arguments = context.get_x_argument(as_dictionary=True)
    dsn = arguments.get("dsn") or config.attributes.get("dsn")
    if dsn:
        return dsn
    from shard_router.file_store import FileTopologyStore

    home = Path(os.environ.get("WALLET_HOME", ".wallet"))
    path = Path(arguments.get("topology") or os.environ.get("WALLET_TOPOLOGY") or home / "topology.json")
    topology = FileTopologyStore(path).load()
    assert topology.ledger, f"{path} names no ledger database; pass -x dsn=postgresql://..."
    return topology.ledger


def run_sync_migrations(connection) -> None:  # type: ignore[no-untyped-def]
    context.configure(connection=connection, target_metadata=metadata, transaction_per_migration=True)
    with context.begin_transaction():
        context.run_migrations()


async def run_async_migrations() -> None:
    engine = create_async_engine(ledger_dsn().replace("postgresql://", "postgresql+asyncpg://", 1), poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(run_sync_migrations)
            await connection.commit()
    finally:
        await engine.dispose()


asyncio.run(run_async_migrations())
