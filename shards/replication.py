"""A shard (or the ledger) as a replicated cluster: a primary and its standbys named in one
multi-host DSN (`postgresql://u@h1:p1,h2:p2/db?target_session_attrs=read-write`, how
launchers/patroni.py and docker/ write the topology). A connection reaches whichever member
is the primary now; these checks say what a single connection cannot: whether a synchronous
standby has every commit, and whether the members agree on what 2PC needs."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg

from core.domain.errors import ConfigurationError
from shards.pool import Connection

CONNECT_TIMEOUT_S = 3.0
SYNCHRONOUS_STANDBYS = "SELECT count(*) FROM pg_stat_replication WHERE sync_state IN ('sync', 'quorum')"


def members_of(dsn: str) -> list[str]:
    """One DSN per server a multi-host DSN names, each reaching that server whatever its role
    (target_session_attrs=any); [] for a DSN naming one server."""
    parts = urlsplit(dsn)
    credentials, _, hosts = parts.netloc.rpartition("@")
    if "," not in hosts:
        return []
    query = dict(parse_qsl(parts.query))
    query["target_session_attrs"] = "any"
    prefix = f"{credentials}@" if credentials else ""
    return [urlunsplit((parts.scheme, prefix + host, parts.path, urlencode(query), "")) for host in hosts.split(",")]


def is_replicated(dsn: str) -> bool:
    return bool(members_of(dsn))


def server_of(member_dsn: str) -> str:
    """host:port of one member's DSN, for messages."""
    return urlsplit(member_dsn).netloc.rpartition("@")[2]


async def synchronous_standbys(connection: Connection) -> int:
    """Standbys that acknowledge this primary's commits before they return."""
    return int(await connection.fetchval(SYNCHRONOUS_STANDBYS))


async def synchronous_standbys_at(dsn: str) -> int:
    """synchronous_standbys on the server `dsn` reaches now (its primary)."""
    connection = await asyncpg.connect(dsn, timeout=CONNECT_TIMEOUT_S)
    try:
        return await synchronous_standbys(connection)
    finally:
        await connection.close()


@dataclass(frozen=True)
class MemberSetting:
    server: str
    max_prepared_transactions: int | None  # None: the member did not answer


async def member_settings(dsn: str) -> list[MemberSetting]:
    """Every member's setting, each asked on its own connection."""
    found = []
    for member in members_of(dsn):
        try:
            connection = await asyncpg.connect(member, timeout=CONNECT_TIMEOUT_S)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
            found.append(MemberSetting(server_of(member), None))
            continue
        try:
            value = int(await connection.fetchval("SELECT current_setting('max_prepared_transactions')::int"))
        finally:
            await connection.close()
        found.append(MemberSetting(server_of(member), value))
    return found


async def check_two_phase_ready(name: str, dsn: str, primary: Connection) -> None:
    """Refuse (ConfigurationError, naming the servers) a shard whose servers cannot run 2PC:
    max_prepared_transactions 0, or different on two members (a standby with fewer slots
    stops replaying the primary's prepared transactions, and would refuse to be promoted).
    `primary`: a connection to the server the DSN reaches now."""
    if not is_replicated(dsn):
        value = int(await primary.fetchval("SELECT current_setting('max_prepared_transactions')::int"))
        answered = [MemberSetting(server_of(dsn), value)]
    else:
        answered = [m for m in await member_settings(dsn) if m.max_prepared_transactions is not None]
    for member in answered:
        if member.max_prepared_transactions == 0:
            raise ConfigurationError(
                f"{name}: max_prepared_transactions is 0 on {member.server}; 2PC needs it "
                "at least max_connections (launchers/postgres.py sets it)"
            )
    for first, other in zip(answered, answered[1:], strict=False):
        if first.max_prepared_transactions != other.max_prepared_transactions:
            raise ConfigurationError(
                f"{name}: max_prepared_transactions is {first.max_prepared_transactions} on {first.server} but "
                f"{other.max_prepared_transactions} on {other.server}; every member of a cluster must have the "
                "same (Patroni keeps it in the cluster's configuration)"
            )
