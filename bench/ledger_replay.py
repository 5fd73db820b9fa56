"""`wallet bench ledger`: events replayed per second, from scratch and from a snapshot.

Builds a ledger of N valid, hash-chained events (by COPY, on a fresh local ledger server),
then times a full replay of every account at the last moment, from the first event and
from a snapshot taken at 90% of the history.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import asyncpg

from ledger.chain import GENESIS, LedgerEvent, chain_hash
from ledger.replay import replay_balances, take_snapshot
from shards import migrate
from launchers.postgres import LocalCluster, temporary_home

COPY_CHUNK = 200_000
COLUMNS = ["stream", "position", "source_event_id", "transaction_id", "account_id", "version", "kind", "amount",
           "reserved_delta", "balance_after", "reserved_after", "currency", "created_at", "prev_hash", "hash"]


async def fill(dsn: str, events: int, accounts: int, streams: int, seed: int) -> datetime:
    """Deposits then transfers, spread over `streams`; returns the last event's time."""
    rng = random.Random(seed)
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    balance = [0] * accounts
    version = [0] * accounts
    heads = {f"shard{i}": (0, GENESIS) for i in range(streams)}
    connection = await asyncpg.connect(dsn)
    try:
        chunk: list[tuple[object, ...]] = []
        for index in range(events):
            account = rng.randrange(accounts)
            amount = 10_000 if balance[account] < 100 or index < accounts else -rng.randint(1, 99)
            kind = "deposit" if amount > 0 else "debit"
            balance[account] += amount
            version[account] += 1
            stream = f"shard{account % streams}"
            position, prev = heads[stream]
            event = LedgerEvent(stream, position + 1, index + 1, str(uuid.UUID(int=rng.getrandbits(128))), f"acct-{account:07d}",
                                version[account], kind, amount, 0, balance[account], 0, "USD",
                                start + timedelta(milliseconds=index), prev)
            digest = chain_hash(prev, event)
            heads[stream] = (position + 1, digest)
            chunk.append((*(getattr(event, c) for c in COLUMNS[:-1]), digest))
            if len(chunk) >= COPY_CHUNK:
                await connection.copy_records_to_table("ledger_events", records=chunk, columns=COLUMNS)
                chunk = []
        if chunk:
            await connection.copy_records_to_table("ledger_events", records=chunk, columns=COLUMNS)
        await connection.execute("ANALYZE ledger_events")
    finally:
        await connection.close()
    return start + timedelta(milliseconds=events - 1)


async def measure(dsn: str, events: int, end: datetime) -> dict[str, float]:
    connection = await asyncpg.connect(dsn, command_timeout=3600)
    try:
        started = time.perf_counter()
        scratch = await replay_balances(connection, end, use_snapshot=False)
        from_scratch_s = time.perf_counter() - started
        cut = datetime(2026, 1, 1, tzinfo=timezone.utc) + timedelta(milliseconds=int(events * 0.9))
        started = time.perf_counter()
        await take_snapshot(connection, cut)
        snapshot_s = time.perf_counter() - started
        started = time.perf_counter()
        resumed = await replay_balances(connection, end)
        from_snapshot_s = time.perf_counter() - started
        assert resumed.balances == scratch.balances, "a replay from a snapshot must equal one from scratch"
    finally:
        await connection.close()
    return {"events": events, "accounts": len(scratch.balances), "from_scratch_s": from_scratch_s,
            "from_scratch_events_per_s": events / from_scratch_s, "snapshot_s": snapshot_s,
            "from_snapshot_s": from_snapshot_s, "from_snapshot_speedup": from_scratch_s / from_snapshot_s}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="wallet bench ledger", description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000, help="ledger size (10,000,000 is the size to aim at)")
    parser.add_argument("--accounts", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args(argv)
    assert args.events >= args.accounts >= 10, "--events >= --accounts >= 10"
    home = temporary_home("bench-ledger")
    cluster = LocalCluster(home, shard_count=1)
    try:
        topology = cluster.start()
        assert topology.ledger
        migrate.upgrade(topology.ledger, target="ledger")
        started = time.perf_counter()
        end = asyncio.run(fill(topology.ledger, args.events, args.accounts, 4, args.seed))
        print(f"built {args.events:,} chained events in {time.perf_counter() - started:.0f} s", flush=True)
        figures = asyncio.run(measure(topology.ledger, args.events, end))
    finally:
        cluster.stop()
        shutil.rmtree(home, ignore_errors=True)
    print(f"replay from scratch: {figures['from_scratch_s']:.2f} s = {figures['from_scratch_events_per_s']:,.0f} events/s; "
          f"snapshot at 90%: {figures['snapshot_s']:.2f} s; replay from it: {figures['from_snapshot_s']:.2f} s "
          f"({figures['from_snapshot_speedup']:.1f}x faster)")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "ledger.json").write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
