"""`wallet bench ledger`: events replayed per second, from scratch and from a snapshot; and
the relay's events per second and CPU per event, with one ledger server and with two.

Builds a ledger of N valid, hash-chained events (by COPY, on a fresh local ledger server, in
a process of its own), then, in this process, times a full replay of every account at the
last moment from the first event; a snapshot at 90% of the history; the replay from it (the
10% tail); one account's balance at a moment; and reports this process's peak memory.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import random
import resource
import shutil
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg

from bench.relay import measure_relay
from launchers.postgres import LocalCluster, temporary_home
from ledger.appends import COPY_COLUMNS
from ledger.chain import GENESIS, LedgerEvent, chain_hash
from ledger.partitions import LedgerPartitions
from ledger.replay import replay_balances
from ledger.snapshots import take_snapshot
from shard_router.topology import FIRST_LEDGER, LedgerServer
from shards import migrate

COPY_CHUNK = 200_000
# The relay appends a stream's events in batches of up to RELAY_BATCH_MAX: the bench writes
# each stream's events of this many generated ones together, as the relays would.
RELAY_ROUND = 20_000
COLUMNS = COPY_COLUMNS  # the ledger's own, as the relay writes them
ACCOUNT_AT_SAMPLES = 50
STREAMS = 4  # as `wallet dev up`'s 4 shards


async def fill(dsn: str, events: int, accounts: int, streams: int, seed: int) -> datetime:
    """Deposits then transfers, spread over `streams`; returns the last event's time."""
    rng = random.Random(seed)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    balance = [0] * accounts
    version = [0] * accounts
    heads = {f"shard{i}": (0, GENESIS) for i in range(streams)}
    connection = await asyncpg.connect(dsn)
    try:
        chunk: list[tuple[object, ...]] = []
        pending: list[tuple[object, ...]] = []
        for index in range(events):
            account = rng.randrange(accounts)
            amount = 10_000 if balance[account] < 100 or index < accounts else -rng.randint(1, 99)
            kind = "deposit" if amount > 0 else "debit"
            balance[account] += amount
            version[account] += 1
            stream = f"shard{account % streams}"
            position, prev = heads[stream]
            event = LedgerEvent(
                stream,
                position + 1,
                index + 1,
                str(uuid.UUID(int=rng.getrandbits(128))),
                f"acct-{account:07d}",
                version[account],
                kind,
                amount,
                0,
                balance[account],
                0,
                "USD",
                start + timedelta(milliseconds=index),
                prev,
            )
            digest = chain_hash(prev, event)
            heads[stream] = (position + 1, digest)
            # created_at grows with the index here, so visible_at (its running maximum) is it.
            chunk.append((*(getattr(event, c) for c in COLUMNS[:-2]), digest, event.created_at))
            if len(chunk) >= RELAY_ROUND:
                chunk.sort(key=lambda row: str(row[0]))  # stable: each stream's events stay in order
                pending.extend(chunk)
                chunk = []
            if len(pending) >= COPY_CHUNK:
                await connection.copy_records_to_table("ledger_events", records=pending, columns=COLUMNS)
                pending = []
        chunk.sort(key=lambda row: str(row[0]))
        pending.extend(chunk)
        if pending:
            await connection.copy_records_to_table("ledger_events", records=pending, columns=COLUMNS)
        await connection.executemany(
            "INSERT INTO ledger_heads (stream, position, hash) VALUES ($1, $2, $3)",
            [(stream, position, head) for stream, (position, head) in heads.items()],
        )
        # What autovacuum does to a table that has been written: hint bits and visibility map
        # set, so the first replay measures reading, not that.
        await connection.execute("VACUUM (ANALYZE) ledger_events")
    finally:
        await connection.close()
    return start + timedelta(milliseconds=events - 1)


async def measure(dsn: str, events: int, accounts: int, end: datetime) -> dict[str, float]:
    streams = tuple(f"shard{i}" for i in range(STREAMS))
    connection = await asyncpg.connect(dsn, command_timeout=3600)
    partitions = await LedgerPartitions({FIRST_LEDGER: LedgerServer(dsn, streams)}).open()
    try:
        started = time.perf_counter()
        scratch = await replay_balances(partitions, end, use_snapshot=False)  # the streams at once
        from_scratch_s = time.perf_counter() - started
        cut = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(milliseconds=int(events * 0.9))
        started = time.perf_counter()
        await take_snapshot(connection, streams, cut)
        snapshot_s = time.perf_counter() - started
        started = time.perf_counter()
        resumed = await replay_balances(partitions, end)
        from_snapshot_s = time.perf_counter() - started
        assert resumed.snapshot_id is not None and resumed.balances == scratch.balances, (
            "a replay from a snapshot must equal one from scratch"
        )
        rng = random.Random(events)
        took = []
        for _ in range(ACCOUNT_AT_SAMPLES):  # one account at a moment after the snapshot
            account = f"acct-{rng.randrange(accounts):07d}"
            moment = cut + timedelta(milliseconds=rng.randrange(max(1, events // 10)))
            started = time.perf_counter()
            await replay_balances(partitions, moment, account)
            took.append(time.perf_counter() - started)
        account_at_ms = sorted(took)[len(took) // 2] * 1000
    finally:
        await partitions.close()
        await connection.close()
    peak_rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux
    return {
        "events": events,
        "accounts": len(scratch.balances),
        "from_scratch_s": from_scratch_s,
        "replay_events_per_s": events / from_scratch_s,
        "snapshot_s": snapshot_s,
        "snapshot_tail_s": from_snapshot_s,
        "from_snapshot_speedup": from_scratch_s / from_snapshot_s,
        "account_at_ms": account_at_ms,
        "peak_rss_mib": peak_rss_mib,
    }


def build(dsn: str, events: int, accounts: int, seed: int) -> datetime:
    """The ledger's events, built in a child process (its memory is not the replay's)."""
    return asyncio.run(fill(dsn, events, accounts, STREAMS, seed))


def relay_summary(relay: dict[str, float]) -> dict[str, float]:
    """bench/relay.py's figures under the names ledger.json keeps."""
    one = relay["relay_1_coordinator_cpu_us"] + relay["relay_1_postgres_cpu_us"]
    two = relay["relay_2_coordinator_cpu_us"] + relay["relay_2_postgres_cpu_us"]
    return {
        "relay_events": relay["relay_1_events"],
        "relay_events_per_s": relay["relay_1_events_per_s"],
        "relay_coordinator_cpu_us": relay["relay_1_coordinator_cpu_us"],
        "relay_postgres_cpu_us": relay["relay_1_postgres_cpu_us"],
        "relay_2_ledgers_events_per_s": relay["relay_2_events_per_s"],
        "relay_2_ledgers_coordinator_cpu_us": relay["relay_2_coordinator_cpu_us"],
        "relay_2_ledgers_postgres_cpu_us": relay["relay_2_postgres_cpu_us"],
        "relay_2_ledgers_cpu_ratio": two / one if one else 0.0,
        "hash_python_events_per_s": relay["hash_python_events_per_s"],
        "hash_sql_events_per_s": relay["hash_sql_events_per_s"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="wallet bench ledger", description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000, help="ledger size (10,000,000 is the size to aim at)")
    parser.add_argument("--accounts", type=int, default=100_000)
    parser.add_argument(
        "--relay-events", type=int, default=400_000, help="outbox events relayed, with one ledger server and with two"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args(argv)
    assert args.events >= args.accounts >= 10, "--events >= --accounts >= 10"
    home = temporary_home("bench-ledger")
    cluster = LocalCluster(home, shard_count=STREAMS, ledgers=2)
    try:
        topology = cluster.start()
        dsn = topology.ledgers[FIRST_LEDGER].dsn
        migrate.upgrade_all(topology)
        started = time.perf_counter()
        with multiprocessing.get_context("spawn").Pool(1) as builder:
            end = builder.apply(build, (dsn, args.events, args.accounts, args.seed))
        print(f"built {args.events:,} chained events in {time.perf_counter() - started:.0f} s", flush=True)
        figures: dict[str, float] = asyncio.run(measure(dsn, args.events, args.accounts, end))
        print(f"relay: {args.relay_events:,} outbox events, one ledger server then two ...", flush=True)
        relay = asyncio.run(measure_relay(cluster, topology, args.relay_events))
        figures.update(relay_summary(relay))
    finally:
        cluster.stop()
        shutil.rmtree(home, ignore_errors=True)
    print(
        f"replay from scratch: {figures['from_scratch_s']:.2f} s = {figures['replay_events_per_s']:,.0f} events/s; "
        f"snapshot at 90%: {figures['snapshot_s']:.2f} s; "
        f"replay from it (10% tail): {figures['snapshot_tail_s']:.2f} s "
        f"({figures['from_snapshot_speedup']:.1f}x faster); one account at T: {figures['account_at_ms']:.1f} ms "
        f"(median of {ACCOUNT_AT_SAMPLES}); peak memory of the replaying process {figures['peak_rss_mib']:.0f} MiB"
    )
    print(
        f"relay, one ledger server: {figures['relay_events_per_s']:,.0f} events/s at "
        f"{figures['relay_coordinator_cpu_us']:.1f} µs relay + {figures['relay_postgres_cpu_us']:.1f} µs "
        f"PostgreSQL CPU per event; two ledger servers: {figures['relay_2_ledgers_events_per_s']:,.0f} events/s at "
        f"{figures['relay_2_ledgers_coordinator_cpu_us']:.1f} + {figures['relay_2_ledgers_postgres_cpu_us']:.1f} µs "
        f"({figures['relay_2_ledgers_cpu_ratio']:.2f}x the CPU per event of one); chain hashing: Python "
        f"{figures['hash_python_events_per_s']:,.0f} events/s, "
        f"PostgreSQL sha256() {figures['hash_sql_events_per_s']:,.0f}"
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "ledger.json").write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
