"""One asyncpg pool per shard, opened at startup and closed at shutdown."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from typing import TYPE_CHECKING

import asyncpg

from shards.errors import ShardRetryable, ShardUnavailable

if TYPE_CHECKING:
    from typing import TypeAlias

    # What every query function takes: a connection of its own, or one a pool lends (asyncpg's
    # proxy, which forwards each call to the connection it holds).
    Connection: TypeAlias = asyncpg.Connection[asyncpg.Record] | asyncpg.pool.PoolConnectionProxy[asyncpg.Record]
else:
    Connection = asyncpg.Connection

POOL_SIZE_MIN = 2
POOL_SIZE_MAX = 16
CONNECT_TIMEOUT_S = 5.0
COMMAND_TIMEOUT_S = 30.0
# Explicit per-session limits: a stuck lock or a forgotten transaction cannot hang a shard.
SERVER_SETTINGS = {
    "lock_timeout": "5s",
    "statement_timeout": "30s",
    "idle_in_transaction_session_timeout": "60s",
    "application_name": "wallet",
}

# SQLSTATEs after which the whole transaction may be retried from the start.
RETRYABLE_SQLSTATES = frozenset({"40001", "40P01", "55P03", "23505"})

CONNECTION_ERRORS = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    # A replicated shard (shards/replication.py) mid-failover: every server is a standby for
    # now, or the one this connection reached was demoted.
    asyncpg.TargetServerAttributeNotMatched,
    asyncpg.ReadOnlySQLTransactionError,
    # The driver's protocol state broken by a session ended mid-operation (asyncpg issue
    # #1069): the connection is unusable, the shard may be fine.
    asyncpg.InternalClientError,
)
# After these a connection is never lent again (the pool opens a fresh one, which reaches
# the current primary): it was demoted under us, or its protocol state is broken.
BROKEN_CONNECTION_ERRORS = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    asyncpg.ReadOnlySQLTransactionError,
)


def forget_if_broken(connection: Connection, error: BaseException) -> None:
    """A connection a broken-connection error came from is never lent again: terminated, the
    pool opens a fresh one (which reaches the current primary)."""
    cause = error.__cause__ if isinstance(error, ShardUnavailable) else error
    if isinstance(cause, BROKEN_CONNECTION_ERRORS):
        connection.terminate()


def explain(dsn: str, error: BaseException) -> str:
    """What a failed connection means, in words where the driver's are not enough."""
    if isinstance(error, asyncpg.TargetServerAttributeNotMatched):
        hosts = dsn.split("@", 1)[-1].split("/", 1)[0]
        return (
            f"every server at {hosts} answered as a standby (read-only): no primary to write to; "
            "the cluster has no leader now, or the DSN names only replicas"
        )
    return repr(error)


@contextmanager
def errors_of(shard: str) -> Iterator[None]:
    """Translate driver errors raised while talking to `shard` into shard errors."""
    try:
        yield
    except CONNECTION_ERRORS as error:
        raise ShardUnavailable(shard, repr(error)) from error
    except asyncpg.PostgresError as error:
        if getattr(error, "sqlstate", None) in RETRYABLE_SQLSTATES:
            raise ShardRetryable(shard, repr(error)) from error
        raise


async def carry_uuids_as_text(connection: asyncpg.Connection) -> None:
    """Transaction and batch ids travel as their canonical text (lower case) both ways: the
    coordinator carries them as str (core/domain/transfers.py), and a UUID object
    made and compared per transfer costs more than the text it came from. A UUID parameter
    is still accepted (its str is the same text)."""
    await connection.set_type_codec("uuid", schema="pg_catalog", encoder=str, decoder=str, format="text")


async def connect(dsn: str, timeout: float = CONNECT_TIMEOUT_S) -> asyncpg.Connection:
    """One connection outside a pool (tools, checks), carrying ids as the pools do."""
    connection = await asyncpg.connect(dsn, timeout=timeout)
    await carry_uuids_as_text(connection)
    return connection


class ShardConnection(asyncpg.Connection):
    """Our sessions keep no state between uses (no SET, LISTEN, advisory or cursor), so the
    pool's reset query on every release is a wasted round trip. A connection released in a
    transaction is still rolled back by the pool."""

    def get_reset_query(self) -> str:
        return ""


# Told of every statement a pool's connections run, with when it was sent and when its answer
# came: (started, ended), time.monotonic(). The benchmark counts statements and round trips in
# a row with it (bench/round_trips.py). Without one, the pools' connections are plain
# ShardConnections: it costs nothing.
StatementObserver = Callable[[float, float], None]


class ObservedConnection(ShardConnection):
    """A ShardConnection whose every statement is timed and told to its pool's observer."""

    observer: StatementObserver = staticmethod(lambda started, ended: None)  # set per pool (a subclass each)

    async def execute(self, query: str, *args: object, timeout: float | None = None) -> str:
        started = time.monotonic()
        try:
            return await super().execute(query, *args, timeout=timeout)
        finally:
            self.observer(started, time.monotonic())

    # fetch and fetchrow: a timed pass-through of the same call; the stubs overload them
    async def fetch(  # type: ignore[override]
        self, query: str, *args: object, timeout: float | None = None, record_class: object = None
    ) -> list[asyncpg.Record]:
        started = time.monotonic()
        try:
            return await super().fetch(query, *args, timeout=timeout)
        finally:
            self.observer(started, time.monotonic())

    async def fetchval(self, query: str, *args: object, column: int = 0, timeout: float | None = None) -> object:
        started = time.monotonic()
        try:
            return await super().fetchval(query, *args, column=column, timeout=timeout)
        finally:
            self.observer(started, time.monotonic())

    async def fetchrow(  # type: ignore[override]
        self, query: str, *args: object, timeout: float | None = None, record_class: object = None
    ) -> asyncpg.Record | None:
        started = time.monotonic()
        try:
            return await super().fetchrow(query, *args, timeout=timeout)
        finally:
            self.observer(started, time.monotonic())


def observed(observer: StatementObserver) -> type[ObservedConnection]:
    return type("Observed", (ObservedConnection,), {"observer": staticmethod(observer)})


class ShardPools:
    def __init__(
        self,
        shards: Mapping[str, str],
        size_max: int = POOL_SIZE_MAX,
        statement_observer: StatementObserver | None = None,
    ) -> None:
        assert shards, "ShardPools needs at least one shard"
        self.dsns = dict(shards)
        self.size_max = size_max
        self.statement_observer = statement_observer
        self.pools: dict[str, asyncpg.Pool] = {}

    async def open(self) -> None:
        assert not self.pools, "ShardPools.open() called twice"
        names = sorted(self.dsns)
        created = await asyncio.gather(*(self._create(name) for name in names), return_exceptions=True)
        failures = [
            (name, error) for name, error in zip(names, created, strict=True) if isinstance(error, BaseException)
        ]
        for name, pool in zip(names, created, strict=True):
            if not isinstance(pool, BaseException):
                self.pools[name] = pool
        if failures:
            await self.close()
            name, error = failures[0]
            raise ShardUnavailable(name, f"cannot open pool: {explain(self.dsns[name], error)}")

    async def _create(self, name: str) -> asyncpg.Pool:
        return await asyncpg.create_pool(
            self.dsns[name],
            min_size=min(POOL_SIZE_MIN, self.size_max),
            max_size=self.size_max,
            timeout=CONNECT_TIMEOUT_S,
            command_timeout=COMMAND_TIMEOUT_S,
            server_settings=SERVER_SETTINGS,
            connection_class=ShardConnection if self.statement_observer is None else observed(self.statement_observer),
            init=carry_uuids_as_text,
        )

    async def set_address(self, name: str, dsn: str) -> None:
        """A new shard, or a shard at a new address (a topology change): connect first,
        then swap, then close the old pool once its connections are returned."""
        if self.dsns.get(name) == dsn and name in self.pools:
            return
        self.dsns[name] = dsn
        try:
            pool = await self._create(name)
        except Exception as error:
            raise ShardUnavailable(name, f"cannot open pool: {explain(dsn, error)}") from error
        old, self.pools[name] = self.pools.get(name), pool
        if old is not None:
            await old.close()

    async def close(self) -> None:
        pools, self.pools = self.pools, {}
        await asyncio.gather(*(pool.close() for pool in pools.values()), return_exceptions=True)

    @asynccontextmanager
    async def connection(self, shard: str) -> AsyncIterator[Connection]:
        pool = self.pools.get(shard)
        assert pool is not None, f"no pool for shard {shard!r}: is it in the topology?"
        with errors_of(shard):
            async with pool.acquire(timeout=CONNECT_TIMEOUT_S) as connection:
                try:
                    yield connection
                except Exception as error:
                    forget_if_broken(connection, error)
                    raise

    @asynccontextmanager
    async def transaction(self, shard: str) -> AsyncIterator[Connection]:
        """READ COMMITTED plus explicit row locks: every write path locks what it reads."""
        async with self.connection(shard) as connection:
            async with connection.transaction(isolation="read_committed"):
                yield connection
