"""Snapshots: a ledger server's balances at a moment, with where each stream stands,
immutable and hashed.

A snapshot at S, on one ledger server, holds per stream it holds the position up to which
every event is in it, and each account's sums over that stream's events visible at S (an
account whose slot moved has a row per stream); a replay from it reads only each stream's
tail, and a stream that moves to another server leaves its rows behind unread. It is taken
from the server's latest such snapshot before S (so taking one costs the tail, not the
history), and its digest is SHA-256 over a canonical form, so an exported copy (one JSON
document per line: the header, then the rows) is checked when it is imported.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from core.domain.errors import ConfigurationError
from ledger import store
from ledger.replay import stream_sums
from shards.pool import Connection

EXPORT_FORMAT = "wallet-ledger-snapshot/1"
EXPORT_PAGE = 10_000

Balance = tuple[str, str, int, int, int, str]  # account_id, currency, balance, reserved, version, stream


def moment_text(moment: datetime) -> str:
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def digest_of_rows(taken_at: datetime, positions: Iterable[Sequence[Any]], balances: Iterable[Sequence[Any]]) -> bytes:
    """SHA-256 of (moment, (stream, position, head) by stream, balances by account), in a
    fixed text form."""
    digest = hashlib.sha256(f"snapshot\x1f{moment_text(taken_at)}\n".encode())
    for stream, position, head in sorted((str(p[0]), int(p[1]), int(p[2])) for p in positions):
        digest.update(f"stream\x1f{stream}\x1f{position}\x1f{head}\n".encode())
    for row in sorted(tuple(b) for b in balances):
        account_id, currency, balance, reserved, version, stream = row
        digest.update(
            f"{account_id}\x1f{currency}\x1f{int(balance)}\x1f{int(reserved)}\x1f{int(version)}\x1f{stream}\n".encode()
        )
    return digest.digest()


@dataclass(frozen=True)
class Snapshot:
    snapshot_id: int
    taken_at: datetime
    accounts: int  # rows: an account's sums per stream
    digest: bytes
    per_stream: bool = True  # False: whole balances, taken before partitions


async def take_snapshot(
    connection: Connection, streams: Sequence[str], at: datetime, progress: Callable[[int], None] | None = None
) -> int:
    """Store, on this server, every account's sums over each of `streams` at `at`, from the
    server's latest per-stream snapshot before it onward."""
    assert at.tzinfo is not None, "snapshot moments carry a timezone"
    async with connection.transaction(isolation="repeatable_read"):  # positions and balances of one moment
        sums = await stream_sums(connection, streams, at, progress=progress, whole_balances=False)
        positions: dict[str, tuple[int, int]] = {}
        for stream, after, _ in await store.stream_starts(connection, sums.snapshot_id, streams):
            first_left_out, end = await store.stream_positions(connection, stream, after, at)
            head = end if end is not None else after
            positions[stream] = (first_left_out if first_left_out is not None else head, head)
        balances: list[Balance] = [
            (row[0], row[1], row[2], row[3], row[4], stream) for stream, rows in sums.streams.items() for row in rows
        ]
        digest = digest_of_rows(at, [(stream, *p) for stream, p in positions.items()], balances)
        return await store.insert_snapshot(connection, at, positions, balances, digest)


async def snapshot_of(connection: Connection, snapshot_id: int) -> Snapshot:
    row = await connection.fetchrow(store.SNAPSHOT, snapshot_id)
    if row is None:
        raise ConfigurationError(f"no snapshot {snapshot_id}")
    return Snapshot(row["snapshot_id"], row["taken_at"], row["accounts"], bytes(row["digest"]), row["per_stream"])


async def balances_of(connection: Connection, snapshot_id: int) -> list[Balance]:
    """Every balance of a snapshot, read a bounded page at a time."""
    found: list[Balance] = []
    after = ("", "")
    while True:
        page = await connection.fetch(store.SNAPSHOT_BALANCES, snapshot_id, *after, EXPORT_PAGE)
        found.extend((r[0], r[1], r[2], r[3], r[4], r[5]) for r in page)
        if len(page) < EXPORT_PAGE:
            return found
        after = (page[-1]["stream"], page[-1]["account_id"])


async def check_stored(connection: Connection, snapshot_id: int) -> bool:
    """The stored snapshot still has the digest it was stored with."""
    snapshot = await snapshot_of(connection, snapshot_id)
    positions = [tuple(r) for r in await connection.fetch(store.SNAPSHOT_STREAMS, snapshot_id)]
    return digest_of_rows(snapshot.taken_at, positions, await balances_of(connection, snapshot_id)) == snapshot.digest


async def export_snapshot(
    connection: Connection, snapshot_id: int, path: Path, progress: Callable[[int], None] | None = None
) -> Snapshot:
    """Write snapshot `snapshot_id` to `path`: a header line, then one line per balance."""
    snapshot = await snapshot_of(connection, snapshot_id)
    positions = {
        r["stream"]: [r["position"], r["head"]] for r in await connection.fetch(store.SNAPSHOT_STREAMS, snapshot_id)
    }
    balances = await balances_of(connection, snapshot_id)
    if digest_of_rows(snapshot.taken_at, [(k, *v) for k, v in positions.items()], balances) != snapshot.digest:
        raise ConfigurationError(f"snapshot {snapshot_id} does not match its digest in the database: not exported")
    header = {
        "format": EXPORT_FORMAT,
        "snapshot_id": snapshot.snapshot_id,
        "taken_at": moment_text(snapshot.taken_at),
        "accounts": len(balances),
        "positions": positions,
        "digest": snapshot.digest.hex(),
        "per_stream": snapshot.per_stream,
    }
    temporary = path.with_name(path.name + ".partial")
    with temporary.open("w") as out:
        out.write(json.dumps(header, sort_keys=True) + "\n")
        for number, balance in enumerate(balances, 1):
            out.write(json.dumps(balance) + "\n")
            if progress is not None and number % EXPORT_PAGE == 0:
                progress(EXPORT_PAGE)
    if progress is not None:
        progress(len(balances) % EXPORT_PAGE)
    temporary.replace(path)
    return snapshot


def read_export(path: Path) -> tuple[datetime, dict[str, tuple[int, int]], list[Balance], bytes, bool]:
    """(taken_at, positions, balances, digest, per_stream) of an exported snapshot, refused
    unless it is well formed and its content matches its digest."""
    try:
        lines: Iterator[str] = iter(path.read_text().splitlines())
        header = json.loads(next(lines))
        if not isinstance(header, dict) or header.get("format") != EXPORT_FORMAT:
            raise ValueError(f"not a {EXPORT_FORMAT} file")
        taken_at = datetime.fromisoformat(header["taken_at"].replace("Z", "+00:00"))
        positions = {str(k): (int(v[0]), int(v[1])) for k, v in header["positions"].items()}
        balances: list[Balance] = []
        for line in lines:
            account_id, currency, balance, reserved, version, stream = json.loads(line)
            balances.append((str(account_id), str(currency), int(balance), int(reserved), int(version), str(stream)))
        digest = bytes.fromhex(header["digest"])
        per_stream = header.get("per_stream", False) is True  # exports before partitions: whole balances
    except (OSError, StopIteration, ValueError, KeyError, TypeError, AttributeError) as error:
        raise ConfigurationError(f"{path}: not a snapshot export ({error})") from error
    if len(balances) != header.get("accounts"):
        raise ConfigurationError(f"{path}: {len(balances)} balances, the header says {header.get('accounts')}")
    if digest_of_rows(taken_at, [(k, *v) for k, v in positions.items()], balances) != digest:
        raise ConfigurationError(f"{path}: the content does not match its digest: edited or damaged, refused")
    return taken_at, positions, balances, digest, per_stream


async def import_snapshot(connection: Connection, path: Path) -> int:
    """Store an exported snapshot (checked first) as a snapshot of this ledger server; its id."""
    taken_at, positions, balances, digest, per_stream = read_export(path)
    async with connection.transaction():
        existing = await connection.fetchval(store.SNAPSHOT_BY_DIGEST, digest)
        if existing is not None:
            return int(existing)
        try:
            return await store.insert_snapshot(connection, taken_at, positions, balances, digest, per_stream)
        except asyncpg.UniqueViolationError as error:  # imported concurrently
            raise ConfigurationError(f"{path}: imported at the same time by another process") from error
