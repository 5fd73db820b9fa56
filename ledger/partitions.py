"""The ledger's partitions: one pool per ledger server, and which server holds each stream.

A stream is one shard's events (named by the shard). The topology (`ledgers`) puts every
stream on exactly one ledger server; everything that writes or reads a stream goes to that
server, and everything that reads across streams asks each server about the streams the
topology gives it, and no other: a server may still hold a fenced copy of a stream that
moved away (ledger/streams.py), which nothing reads.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TypeVar

import asyncpg

from core.domain.errors import ConfigurationError, WalletError
from core.runtime.fan_out import fan_out
from ledger import appends, store
from ledger.appends import PostgresAppend
from ledger.chain import LedgerEvent
from shard_router.topology import LedgerServer
from shards.pool import SERVER_SETTINGS, carry_uuids_as_text

# What a server that is down or restarting raises.
UNREACHABLE = (OSError, asyncpg.PostgresConnectionError, asyncpg.CannotConnectNowError, asyncpg.InterfaceError)
POOL_SIZE_MAX = 4  # per ledger server: its streams' relay rounds and the reads at once
ACQUIRE_TIMEOUT_S = 10.0  # a pool with every connection busy this long: the round or read fails, named
Answer = TypeVar("Answer")


@dataclass
class Partition:
    name: str
    dsn: str
    streams: tuple[str, ...]
    pool: asyncpg.Pool | None = None
    # Relay transactions at once on this server: each holds a connection while it may ask
    # another server's pool for one (the visible_at of an account's earlier event there), so
    # one connection of each pool is always left for those asks (no two servers wait on
    # each other).
    relaying: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(POOL_SIZE_MAX - 1))

    def connection(self) -> asyncpg.pool.PoolAcquireContext:
        assert self.pool is not None, f"ledger {self.name} is not open"
        return self.pool.acquire(timeout=ACQUIRE_TIMEOUT_S)

    # -- the relay's contract (ledger/contract.py) ------------------------------------------------
    @asynccontextmanager
    async def append(self, stream: str) -> AsyncIterator[PostgresAppend]:
        async with self.relaying, self.connection() as connection, connection.transaction():
            yield await PostgresAppend.lock_head(connection, stream)

    async def prior_visible(self, wanted: dict[str, int]) -> dict[str, str]:
        async with self.connection() as connection:
            return await appends.prior_visible(connection, wanted)

    async def stream_events(self, stream: str) -> AsyncIterator[list[LedgerEvent]]:
        async with self.connection() as connection:
            async for page in store.stream_events(connection, stream):
                yield page


async def open_pool(dsn: str) -> asyncpg.Pool:
    pool: asyncpg.Pool = await asyncpg.create_pool(
        dsn,
        min_size=0,  # opens without connecting: a server down now is named when it is needed
        max_size=POOL_SIZE_MAX,
        timeout=5,
        command_timeout=300,
        server_settings={**SERVER_SETTINGS, "statement_timeout": "300s"},
        init=carry_uuids_as_text,
    )
    return pool


class LedgerPartitions:
    def __init__(self, ledgers: Mapping[str, LedgerServer]) -> None:
        self.partitions = {name: Partition(name, server.dsn, server.streams) for name, server in ledgers.items()}

    async def open(self) -> LedgerPartitions:
        for partition in self.partitions.values():
            partition.pool = await open_pool(partition.dsn)
        return self

    async def close(self) -> None:
        pools = [p.pool for p in self.partitions.values() if p.pool is not None]
        await asyncio.gather(*(pool.close() for pool in pools), return_exceptions=True)
        for partition in self.partitions.values():
            partition.pool = None

    async def switch(self, ledgers: Mapping[str, LedgerServer]) -> None:
        """Follow a new topology: pools for new or readdressed servers, streams placed anew."""
        retired = []
        for name in list(self.partitions):
            server = ledgers.get(name)
            if server is None or server.dsn != self.partitions[name].dsn:
                retired.append(self.partitions.pop(name))
        for name, server in ledgers.items():
            if name in self.partitions:
                self.partitions[name].streams = server.streams
            else:
                self.partitions[name] = Partition(name, server.dsn, server.streams, await open_pool(server.dsn))
        await asyncio.gather(*(p.pool.close() for p in retired if p.pool is not None), return_exceptions=True)

    # -- where ------------------------------------------------------------------------------
    def names(self) -> list[str]:
        return sorted(self.partitions)

    def streams(self) -> list[str]:
        return sorted(stream for p in self.partitions.values() for stream in p.streams)

    def holding(self, stream: str) -> Partition:
        for partition in self.partitions.values():
            if stream in partition.streams:
                return partition
        raise ConfigurationError(f"no ledger server holds stream {stream!r} in this topology")

    def __getitem__(self, name: str) -> Partition:
        return self.partitions[name]

    # -- across all -------------------------------------------------------------------------
    async def each(self, action: Callable[[Partition], Awaitable[Answer]]) -> dict[str, Answer]:
        """`action` on every server at once (those holding streams); the first error raised,
        a server that cannot be reached named (WalletError shard_unavailable: retry later)."""
        names = [name for name in self.names() if self.partitions[name].streams]
        answers = await fan_out(names, lambda name: self._named(name, action))
        answers.raise_first()
        return {name: answers.results[name] for name in names}

    async def _named(self, name: str, action: Callable[[Partition], Awaitable[Answer]]) -> Answer:
        try:
            return await action(self.partitions[name])
        except UNREACHABLE as error:
            raise WalletError(
                "shard_unavailable", f"ledger server {name} is unavailable ({type(error).__name__}: {error})"
            ) from error
