"""What both alembic environments (shards, ledger) share: the topology (-x topology=FILE, or
the store the settings name: ZooKeeper when WALLET_ZK_HOSTS is set, else the file), the
asyncpg URL, running the migrations online or offline, and refusing bad input in one line."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any, NoReturn

import asyncpg
from sqlalchemy import MetaData
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from core.domain.errors import ConfigurationError
from core.runtime.settings import Settings
from shard_router.file_store import FileTopologyStore
from shard_router.stores import TopologyStore, open_store
from shard_router.topology import Topology, TopologyError

EXIT_USAGE = 2


def refuse(message: str) -> NoReturn:
    """An operator's mistake: one line and exit status 2 (SystemExit passes through alembic's
    own error handling, which would print a traceback for an exception)."""
    print(f"alembic: error: {message}", file=sys.stderr)
    raise SystemExit(EXIT_USAGE)


def topology_from(arguments: dict[str, str]) -> tuple[Topology, str]:
    """(the topology, where it was read)."""
    try:
        if arguments.get("topology"):
            store: TopologyStore = FileTopologyStore(Path(arguments["topology"]))
            where = arguments["topology"]
        else:
            settings = Settings.from_environment()
            store = open_store(
                settings.topology_path, settings.zk_hosts, settings.zk_root, settings.zk_session_timeout_ms
            )
            where = (
                f"zookeeper {settings.zk_hosts}{settings.zk_root}" if settings.zk_hosts else str(settings.topology_path)
            )
        try:
            return store.load(), where
        finally:
            store.close()
    except (ConfigurationError, TopologyError) as error:
        refuse(str(error))


# The dialect only: the connection itself is made by asyncpg from the DSN as given.
DIALECT_URL = "postgresql+asyncpg://"


def run(context: Any, metadata: MetaData, dsn: str) -> None:
    """One database per run; asyncpg is the only driver (no second one for alembic). asyncpg
    reads the DSN itself, so a replicated shard's multi-host DSN (shards/replication.py)
    reaches its primary here as everywhere."""
    if context.is_offline_mode():
        context.configure(url=DIALECT_URL, target_metadata=metadata, literal_binds=True)
        with context.begin_transaction():
            context.run_migrations()
        return

    def migrate(connection: Connection) -> None:
        context.configure(connection=connection, target_metadata=metadata, transaction_per_migration=True)
        with context.begin_transaction():
            context.run_migrations()

    async def online() -> None:
        engine = create_async_engine(DIALECT_URL, poolclass=NullPool, async_creator=lambda: asyncpg.connect(dsn))
        try:
            async with engine.connect() as connection:
                await connection.run_sync(migrate)
                await connection.commit()
        finally:
            await engine.dispose()

    asyncio.run(online())
