"""The relay on its own: outbox rows into the ledger, per second and CPU per event, with one
ledger server and with two (part of `wallet bench ledger`).

Each shard's outbox is filled in SQL with rows like the coordinator writes (accounts with
rising versions, so the relay carries visible_at as it does in service); then a relay in
this process drains them, once with every stream on one ledger server and once with the
streams dealt over two. CPU is this process's (the relay's) and every PostgreSQL server's,
per event (bench/cpu.py). Also: the chain's hashing, in Python over the shard's text (what
the relay does) against PostgreSQL's sha256() (a PL/pgSQL loop, one step per event).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping

import asyncpg

from bench.cpu import CpuMeter
from launchers.postgres import LocalCluster
from ledger.chain import GENESIS
from ledger.partitions import LedgerPartitions
from ledger.relay import Relay
from shard_router.topology import LedgerServer, Topology
from shards.outbox import SELECT_FOR_RELAY
from shards.pool import ShardPools
from shards.postgres import PostgresShards

ACCOUNTS_PER_SHARD = 10_000
HASH_SAMPLE = 50_000  # events hashed each way
FILL = """
INSERT INTO outbox (transaction_id, account_id, version, kind, amount, reserved_delta, balance_after,
                    reserved_after, currency, created_at)
SELECT gen_random_uuid(), $1 || '-' || (i % $3), i / $3 + 1, 'deposit', 100, 0, 100 * (i / $3 + 1), 0, 'USD',
       now() + i * interval '1 microsecond'
FROM generate_series($2::bigint, $2::bigint + $4 - 1) AS i ORDER BY i
"""
# The chain in SQL: a PL/pgSQL loop hashing, in event order, the previous hash with each
# row's text through PostgreSQL's sha256() (a fold: one step per event, as the Python loop).
SQL_CHAIN = """
CREATE FUNCTION pg_temp.relay_chain(head bytea, wanted bigint) RETURNS bytea LANGUAGE plpgsql AS $fold$
DECLARE
    r record;
    p bigint := 0;
BEGIN
    FOR r IN {select} LOOP
        p := p + 1;
        head := sha256(head || convert_to('shard0' || chr(31) || p::text || chr(31) || r.hashed, 'UTF8'));
    END LOOP;
    RETURN head;
END
$fold$
"""


async def fill_outboxes(topology: Topology, events: int, label: str) -> None:
    """`events` rows over the shards' outboxes, for accounts of their own (named by `label`),
    each from its first version."""
    per_shard = events // len(topology.shards)
    for shard, dsn in sorted(topology.shards.items()):
        connection = await asyncpg.connect(dsn)
        try:
            await connection.execute(FILL, f"relay{label}-{shard}", 0, ACCOUNTS_PER_SHARD, per_shard)
            # What autovacuum and the checkpointer would have done to rows written over time
            # by transfers: the fill's cost, not the relay's.
            await connection.execute("VACUUM (ANALYZE) outbox")
        finally:
            await connection.close()
    for dsn in [*topology.shards.values(), *(server.dsn for server in topology.ledgers.values())]:
        connection = await asyncpg.connect(dsn)
        try:
            await connection.execute("CHECKPOINT")
        finally:
            await connection.close()


async def drain_measured(
    cluster: LocalCluster, topology: Topology, ledgers: Mapping[str, LedgerServer]
) -> dict[str, float]:
    pools = ShardPools(topology.shards, size_max=2)
    await pools.open()
    partitions = await LedgerPartitions(ledgers).open()
    try:
        relay = Relay(PostgresShards(pools), partitions)
        meter, started = CpuMeter(cluster).start(), time.perf_counter()
        moved = await relay.drain()
        seconds = time.perf_counter() - started
        process_us, postgres_us = meter.stop().per_transfer_us(moved)
    finally:
        await partitions.close()
        await pools.close()
    return {
        "events": moved,
        "seconds": seconds,
        "events_per_s": moved / seconds,
        "coordinator_cpu_us": process_us or 0.0,
        "postgres_cpu_us": postgres_us or 0.0,
    }


async def hashing(topology: Topology) -> dict[str, float]:
    """Events hashed per second: Python over the shard's text, and PostgreSQL's sha256()."""
    dsn = topology.shards["shard0"]
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute(FILL, "hash-shard0", 0, ACCOUNTS_PER_SHARD, HASH_SAMPLE)
        rows = await connection.fetch(SELECT_FOR_RELAY, HASH_SAMPLE, timeout=600)
        started = time.perf_counter()
        head = GENESIS
        sha256 = hashlib.sha256
        for position, row in enumerate(rows, 1):
            head = sha256(head + ("shard0\x1f" + str(position) + "\x1f" + row[4]).encode()).digest()
        python_s = time.perf_counter() - started
        await connection.execute(SQL_CHAIN.format(select=SELECT_FOR_RELAY.replace("$1", "wanted")))
        started = time.perf_counter()
        in_sql = await connection.fetchval("SELECT pg_temp.relay_chain($1, $2)", GENESIS, HASH_SAMPLE, timeout=600)
        sql_s = time.perf_counter() - started
        assert bytes(in_sql) == head, "the two ways hash the same chain"
        await connection.execute("DELETE FROM outbox WHERE account_id LIKE 'hash-%'")
    finally:
        await connection.close()
    return {"hash_python_events_per_s": len(rows) / python_s, "hash_sql_events_per_s": len(rows) / sql_s}


async def measure_relay(cluster: LocalCluster, topology: Topology, events: int) -> dict[str, float]:
    """Relay figures with one ledger server, then two (streams dealt over them)."""
    names = sorted(topology.ledgers)
    assert len(names) >= 2, "the relay bench runs two ledger servers"
    streams = tuple(sorted(topology.shards))
    one = {names[0]: LedgerServer(topology.ledgers[names[0]].dsn, streams)}
    two = {name: LedgerServer(topology.ledgers[name].dsn, streams[index::2]) for index, name in enumerate(names[:2])}
    figures: dict[str, float] = {}
    for label, ledgers in (("1", one), ("2", two)):
        await fill_outboxes(topology, events, label)
        measured = await drain_measured(cluster, topology, ledgers)
        for key, value in measured.items():
            figures[f"relay_{label}_{key}"] = value
    figures.update(await hashing(topology))
    return figures
