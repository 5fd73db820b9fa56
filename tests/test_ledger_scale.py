"""The ledger at scale and past tampering: snapshots that hold per-stream positions (a replay
from one reads the tail only, and equals one from scratch), exported and imported with their
digest; signed, anchored chain heads that name a consistent rewrite of a stream's tail; and
the re-derivation of every transfer's events with today's rules."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from coordinator.service.wallet import WalletService
from core.domain import branch_plan
from core.domain.errors import ConfigurationError
from core.runtime.settings import Settings
from launchers.postgres import LocalCluster
from ledger.chain import LedgerEvent, chain_hash
from ledger.replay import END_OF_TIME
from ledger.service import LedgerService
from shard_router.topology import FIRST_LEDGER, Topology
from tests.helpers import REPOSITORY, TEST_SECRET, accounts_on, open_accounts

SHARDS = ("shard0", "shard1", "shard2", "shard3")


@pytest.fixture
async def anchored(cluster: LocalCluster, tmp_path: Path) -> AsyncIterator[WalletService]:
    """A service whose ledger checkpoints go to this test's own key and anchor file."""
    settings = Settings(
        home=cluster.home,
        topology_path=cluster.topology_path,
        auth_secret=TEST_SECRET,
        ledger_key_file=tmp_path / "key.pem",
        ledger_anchor_file=tmp_path / "anchors.jsonl",
    )
    async with WalletService(cluster.topology, settings) as service:
        yield service


def ledger_of(service: WalletService) -> LedgerService:
    assert service.ledger is not None
    return service.ledger


async def some_transfers(service: WalletService, topology: Topology, count: int) -> list[str]:
    everyone = [a for shard in SHARDS for a in accounts_on(topology, shard, 2)]
    await open_accounts(service, everyone, deposit="50.00")
    for index in range(count):
        source, target = everyone[index % len(everyone)], everyone[(index * 3 + 1) % len(everyone)]
        if source != target:
            await service.transfer(source, target, "0.25", "USD", str(uuid.uuid4()), ("2pc", "tcc", "saga")[index % 3])
    await ledger_of(service).drain()
    return everyone


async def test_replay_from_a_snapshot_reads_the_tail_and_equals_scratch(
    service: WalletService, topology: Topology
) -> None:
    """A snapshot records where each stream stands; a replay from it counts only later events,
    and gives what a replay from the first event gives, and what the live balances are."""
    ledger = ledger_of(service)
    everyone = await some_transfers(service, topology, 12)
    (snapshot_id,) = (await ledger.snapshot(datetime.now(UTC))).values()
    later = await some_transfers(service, topology, 9)
    scratch = await ledger.replay(END_OF_TIME, use_snapshot=False)
    resumed = await ledger.replay(END_OF_TIME)
    assert resumed.snapshot_id == snapshot_id and resumed.balances == scratch.balances
    assert 0 < resumed.events < scratch.events, "a replay from a snapshot reads the tail only"
    for account_id in everyone + later:
        account = await service.get_account(account_id)
        assert (scratch.balances[account_id].balance, scratch.balances[account_id].reserved) == (
            account.balance,
            account.reserved,
        )
    one = later[0]
    alone = await ledger.replay(END_OF_TIME, one)
    assert alone.balances == {one: scratch.balances[one]}


async def test_snapshot_export_import_and_a_changed_file(
    service: WalletService, topology: Topology, tmp_path: Path
) -> None:
    """An exported snapshot carries its digest; imported back it is the same snapshot; a file
    changed by hand is refused, naming why."""
    ledger = ledger_of(service)
    await some_transfers(service, topology, 3)
    (snapshot_id,) = (await ledger.snapshot(datetime.now(UTC))).values()
    exported = await ledger.export_snapshot(snapshot_id, tmp_path / "snapshot.jsonl")
    assert exported.snapshot_id == snapshot_id and len(exported.digest) == 32
    assert await ledger.import_snapshot(tmp_path / "snapshot.jsonl") == snapshot_id  # already there: the same one
    lines = (tmp_path / "snapshot.jsonl").read_text().splitlines()
    account, currency, balance, reserved, version, stream = json.loads(lines[1])
    lines[1] = json.dumps([account, currency, balance + 100, reserved, version, stream])
    (tmp_path / "edited.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigurationError, match="does not match its digest"):
        await ledger.import_snapshot(tmp_path / "edited.jsonl")
    (tmp_path / "garbage.jsonl").write_text("hello\n")
    with pytest.raises(ConfigurationError, match="not a snapshot export"):
        await ledger.import_snapshot(tmp_path / "garbage.jsonl")


async def rewrite_tail(topology: Topology, stream: str, first: int) -> None:
    """What a superuser could do: the events of `stream` from position `first` on, each moved a
    microsecond in time, every hash after recomputed, so the chain itself still verifies."""
    connection = await asyncpg.connect(topology.ledgers[FIRST_LEDGER].dsn)
    try:
        async with connection.transaction():
            await connection.execute("ALTER TABLE ledger_events DISABLE TRIGGER ledger_events_append_only")
            previous = bytes(
                await connection.fetchval(
                    "SELECT hash FROM ledger_events WHERE stream = $1 AND position = $2", stream, first - 1
                )
            )
            rows = await connection.fetch(
                "SELECT stream, position, source_event_id, transaction_id::text AS transaction_id, account_id, "
                "version, "
                "kind, amount, "
                "reserved_delta, balance_after, reserved_after, currency, created_at FROM ledger_events "
                "WHERE stream = $1 AND position >= $2 ORDER BY position",
                stream,
                first,
            )
            for row in rows:
                event = LedgerEvent(
                    **{**dict(row), "created_at": row["created_at"] + timedelta(microseconds=1), "prev_hash": previous}
                )
                digest = chain_hash(previous, event)
                await connection.execute(
                    "UPDATE ledger_events SET created_at = $3, prev_hash = $4, hash = $5 WHERE stream = $1 AND "
                    "position = $2",
                    stream,
                    row[1],
                    event.created_at,
                    previous,
                    digest,
                )
                previous = digest
            await connection.execute("UPDATE ledger_heads SET hash = $2 WHERE stream = $1", stream, previous)
            await connection.execute("ALTER TABLE ledger_events ENABLE TRIGGER ledger_events_append_only")
    finally:
        await connection.close()


async def test_a_consistent_rewrite_of_a_tail_is_named_by_the_anchors(
    anchored: WalletService, topology: Topology, tmp_path: Path
) -> None:
    """Checkpoints anchor each stream's head outside the database; a superuser's rewrite of the
    last events with their hashes recomputed passes the chain check, and the anchors name the
    stream and the first position that differs. An anchor edited by hand is refused."""
    ledger = ledger_of(anchored)
    await some_transfers(anchored, topology, 4)
    first = await ledger.checkpoint(create_key=True)
    await some_transfers(anchored, topology, 4)
    second = await ledger.checkpoint()
    assert await ledger.verify_anchors() == (2, [])
    stream = "shard0"
    (at_first, _), (at_second, _) = first[stream], second[stream]
    assert at_second > at_first + 1
    await rewrite_tail(topology, stream, at_first + 1)
    assert await ledger.verify() == [], "the rewrite kept the chain consistent"
    checked, rewrites = await ledger.verify_anchors()
    assert checked == 2 and len(rewrites) == 1
    rewrite = rewrites[0]
    assert (rewrite.stream, rewrite.first_position, rewrite.last_position) == (stream, at_first + 1, at_second)
    assert f"stream {stream}" in str(rewrite) and f"{at_first + 1}..{at_second}" in str(rewrite)

    anchors = (tmp_path / "anchors.jsonl").read_text().splitlines()
    document = json.loads(anchors[0])
    document["heads"][stream][0] += 1
    (tmp_path / "anchors.jsonl").write_text(
        json.dumps(document, sort_keys=True, separators=(",", ":")) + "\n" + anchors[1] + "\n"
    )
    with pytest.raises(ConfigurationError, match="line 1: bad signature"):
        await ledger.verify_anchors()


def test_checkpoint_and_verify_from_the_cli(cluster: LocalCluster, tmp_path: Path) -> None:
    """`wallet ledger checkpoint` makes the key and the first anchor; `wallet ledger verify`
    checks the chain against it."""
    environment = {
        **os.environ,
        "WALLET_HOME": str(cluster.home),
        "WALLET_LEDGER_KEY_FILE": str(tmp_path / "k.pem"),
        "WALLET_LEDGER_ANCHOR_FILE": str(tmp_path / "a.jsonl"),
    }

    def wallet(*arguments: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "coordinator.cli.main", *arguments],
            cwd=REPOSITORY,
            env=environment,
            capture_output=True,
            text=True,
            timeout=120,
        )

    made = wallet("ledger", "checkpoint")
    assert made.returncode == 0 and "signed with" in made.stdout, made.stderr
    assert (tmp_path / "k.pem").stat().st_mode & 0o777 == 0o600
    verified = wallet("ledger", "verify")
    assert verified.returncode == 0 and "1 anchors checked: every anchored head matches" in verified.stdout
    assert "verify:" in verified.stderr  # the progress line, when not on a terminal
    exported = wallet("ledger", "snapshot", "--export", str(tmp_path / "s.jsonl"))
    assert exported.returncode == 0 or "no snapshot to export" in exported.stderr
    missing = wallet("ledger", "snapshot", "--import", str(tmp_path / "nothing.jsonl"))
    assert missing.returncode == 2 and "no file at" in missing.stderr


async def test_rederive_names_a_transfer_todays_rules_would_not_write(
    service: WalletService, topology: Topology, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every transfer's ledger events are what today's rules derive from its record; after a
    rule changes on purpose (how a TC/C hold is released), the transfers whose events came
    from the old rule are named."""
    ledger = ledger_of(service)
    alice, bob = accounts_on(topology, "shard1", 1) + accounts_on(topology, "shard2", 1)
    await open_accounts(service, [alice, bob], deposit="20.00")
    await service.set_account_status(bob, "frozen")
    ours = {str(uuid.uuid4()) for _ in range(2)}
    released, paid = sorted(ours)
    refused = await service.transfer(alice, bob, "5.00", "USD", released, "tcc")  # held, then released
    assert refused.status == "failed"
    await service.set_account_status(bob, "active")
    assert (await service.transfer(alice, bob, "1.00", "USD", paid, "tcc")).status == "success"
    await ledger.drain()
    before = await ledger.rederive()
    assert before.transfers >= 2 and not [m for m in before.mismatches if m.transaction_id in ours]

    check, _ = branch_plan.BUSINESS[("tcc", "debit", "cancel")]
    monkeypatch.setitem(branch_plan.BUSINESS, ("tcc", "debit", "cancel"), (check, ("release", -1, -1)))
    after = await ledger.rederive()
    named = [m for m in after.mismatches if m.transaction_id in ours]
    assert [m.transaction_id for m in named] == [released], named
    assert "release" in str(named[0]) and "today's rules allow" in str(named[0])


async def test_the_serving_leader_checkpoints_periodically(cluster: LocalCluster, tmp_path: Path) -> None:
    """With a signing key present, `wallet serve`'s ledger (relay on, leading) anchors every
    WALLET_LEDGER_CHECKPOINT_S (a follower beside it is gated off)."""
    from ledger.anchors import load_signing_key

    load_signing_key(tmp_path / "key.pem", create=True)
    settings = Settings(
        home=cluster.home,
        topology_path=cluster.topology_path,
        auth_secret=TEST_SECRET,
        ledger_key_file=tmp_path / "key.pem",
        ledger_anchor_file=tmp_path / "anchors.jsonl",
        ledger_checkpoint_s=1,
    )
    follower = await WalletService(cluster.topology, settings, is_leader=lambda: False).open(run_relay=True)
    leader = await WalletService(cluster.topology, settings).open(run_relay=True)
    try:
        deadline = asyncio.get_running_loop().time() + 10
        while (
            not (tmp_path / "anchors.jsonl").exists() or len((tmp_path / "anchors.jsonl").read_text().splitlines()) < 2
        ):
            assert asyncio.get_running_loop().time() < deadline, "no periodic checkpoint"
            await asyncio.sleep(0.2)
    finally:
        await leader.close()
        await follower.close()
    lines = (tmp_path / "anchors.jsonl").read_text().splitlines()
    assert all(json.loads(line)["format"] == "wallet-ledger-anchor/1" for line in lines)
