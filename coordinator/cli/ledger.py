"""`wallet ledger relay|verify|replay|snapshot|checkpoint|audit`: the hash-chained event ledger."""

from __future__ import annotations

import argparse
import asyncio
import signal
import socket
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from coordinator.cli.common import ledger_of, with_service
from coordinator.cli.progress import progress
from coordinator.service.wallet import WalletService
from core.domain.money import format_amount
from core.domain.validation import check_moment
from core.runtime import event_loop, tracing
from core.runtime.logs import configure_logging
from core.runtime.settings import Settings


def command_ledger_relay(args: argparse.Namespace, settings: Settings) -> int:
    if args.follow:
        return follow_relay(settings, args.watch_fd)
    moved = with_service(settings, lambda s: ledger_of(s).drain())
    print(f"relayed {moved} outbox rows into the ledger")
    return 0


def follow_relay(settings: Settings, watch_fd: int | None = None) -> int:
    """The relay as a process of its own (the one `wallet serve` starts, or one beside
    coordinators run with WALLET_RELAY=off): outboxes into the ledger, the signed checkpoints
    and the daily snapshot, over the topology as it changes (new shards' outboxes too). One
    relay of those sharing a ZooKeeper root (or a home) works at a time (role `relay`); the
    others wait to take over. With `watch_fd`, it stops when that socket closes (its `wallet
    serve` is gone)."""
    from coordinator.cluster.coordination import RELAY_ROLE, open_coordination
    from coordinator.cluster.topology_follower import TopologyFollower

    configure_logging(settings.log_format, settings.log_level)
    tracing.configure(settings, "relay")

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for number in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(number, stop.set)
        watching = asyncio.create_task(until_closed(watch_fd, stop)) if watch_fd is not None else None
        coordination = await open_coordination(settings, role=RELAY_ROLE)
        try:
            topology = await asyncio.to_thread(coordination.store.load)
            service = await WalletService(topology, settings, coordination.store, coordination.is_leader).open(
                run_relay=True
            )
            ledger_of(service)
            follower = TopologyFollower(coordination.store, service.switch_topology)
            follower.start()
            try:
                await stop.wait()
            finally:
                await follower.stop()
                await service.close()
        finally:
            await coordination.close()
            if watching is not None:
                watching.cancel()

    try:
        event_loop.run(run())
    finally:
        tracing.stop()  # what is queued is exported
    return 0


async def until_closed(fd: int, stop: asyncio.Event) -> None:
    """Set `stop` once the other end of the socket `fd` closes (the process that holds it died)."""
    reader, _ = await asyncio.open_unix_connection(sock=socket.socket(fileno=fd))
    while await reader.read(4096):
        pass
    stop.set()


def command_ledger_verify(args: argparse.Namespace, settings: Settings) -> int:
    """The chain, then the chain against every anchored head (a rewrite that kept the chain
    consistent breaks an anchor)."""

    async def verify(service: WalletService) -> int:
        ledger = ledger_of(service)
        with progress("verify", await ledger.event_count()) as advance:
            breaks = await ledger.verify(advance)
        for found in breaks:
            print(f"BROKEN: {found}")
        print("hash chain intact" if not breaks else f"{len(breaks)} events do not chain")
        checked, rewrites = await ledger.verify_anchors()
        for rewrite in rewrites:
            print(f"REWRITTEN: {rewrite}")
        if checked:
            print(
                f"{checked} anchors checked: "
                + ("every anchored head matches" if not rewrites else f"{len(rewrites)} streams rewritten")
            )
        else:
            print(f"no anchors yet (none at {settings.ledger_anchor_path}): `wallet ledger checkpoint` makes one")
        await ledger.record_verification(breaks, rewrites)  # what /metrics says until the next one
        return 0 if not breaks and not rewrites else 1

    status: int = with_service(settings, verify)
    return status


def command_ledger_checkpoint(args: argparse.Namespace, settings: Settings) -> int:
    heads = with_service(settings, lambda s: ledger_of(s).checkpoint(create_key=True))
    for stream, (position, digest) in sorted(heads.items()):
        print(f"{stream}\tposition {position}\t{digest.hex()}")
    print(
        f"checkpoint of {len(heads)} streams signed with {settings.ledger_key_path}, appended to "
        f"{settings.ledger_anchor_path}" + (" and ZooKeeper" if settings.zk_hosts else "")
    )
    return 0


def command_ledger_replay(args: argparse.Namespace, settings: Settings) -> int:
    at = check_moment(args.at, "--at") if args.at else datetime.now(UTC)

    async def replay_at(service: WalletService) -> Any:
        with progress("replay", None) as advance:
            return await ledger_of(service).replay(at, args.account, progress=advance)

    replay = with_service(settings, replay_at)
    start = starts_of(replay.snapshots)
    events = f"{replay.events:,} event{'' if replay.events == 1 else 's'}"
    print(f"balances at {at.isoformat()}: {events} replayed from {start}")
    for balance in sorted(replay.balances.values()):
        print(
            f"{balance.account_id}\t{format_amount(balance.balance, balance.currency)} {balance.currency}"
            f"\treserved {format_amount(balance.reserved, balance.currency)}\tversion {balance.version}"
        )
    return 0


def starts_of(snapshots: Mapping[str, int | None]) -> str:
    """Where a replay started: one server's snapshot, or each server's."""
    if len(snapshots) == 1:
        (only,) = snapshots.values()
        return f"snapshot {only}" if only else "the first event"
    return ", ".join(
        f"{name}: " + (f"snapshot {found}" if found else "the first event") for name, found in sorted(snapshots.items())
    )


def command_ledger_snapshot(args: argparse.Namespace, settings: Settings) -> int:
    if args.export_to is not None:

        async def export(service: WalletService) -> Any:
            with progress("export", None, unit="balances") as advance:
                return await ledger_of(service).export_snapshot(args.id, args.export_to, advance, args.ledger)

        snapshot = with_service(settings, export)
        print(
            f"snapshot {snapshot.snapshot_id} of {snapshot.taken_at.isoformat()} ({snapshot.accounts} accounts, "
            f"digest {snapshot.digest.hex()}) exported to {args.export_to}"
        )
        return 0
    if args.import_from is not None:
        imported = with_service(settings, lambda s: ledger_of(s).import_snapshot(args.import_from))
        print(f"{args.import_from}: digest checked, stored as snapshot {imported}")
        return 0
    at = check_moment(args.at, "--at") if args.at else datetime.now(UTC)

    async def take(service: WalletService) -> dict[str, int]:
        await ledger_of(service).drain()
        with progress("snapshot", None) as advance:
            return await ledger_of(service).snapshot(at, advance)

    taken = with_service(settings, take)
    where = ", ".join(f"{ledger}: snapshot {found}" for ledger, found in sorted(taken.items()))
    if len(taken) == 1:
        print(f"snapshot {next(iter(taken.values()))} of balances at {at.isoformat()}")
    else:
        print(f"snapshots of balances at {at.isoformat()}, one per ledger server: {where}")
    return 0


def command_ledger_audit(args: argparse.Namespace, settings: Settings) -> int:
    if args.rederive:
        return rederive(settings)

    async def audit(service: WalletService) -> Any:
        ledger = ledger_of(service)
        with progress("audit", 2 * await ledger.event_count()) as advance:  # verified, then replayed
            return await ledger.audit(advance)

    report = with_service(settings, audit)
    for found in report.breaks:
        print(f"BROKEN CHAIN: {found}")
    for difference in report.differences:
        print(
            f"DIFFERENCE {difference.account_id} on {difference.shard}: ledger says {difference.expected}, "
            f"live is {difference.actual} (balance, reserved, version): {difference.explanation}; "
            f"transactions {', '.join(str(t) for t in difference.transactions) or '-'}"
        )
    for lag in report.lagging:
        print(f"lag {lag.account_id}: {lag.explanation}: {', '.join(str(t) for t in lag.transactions)}")
    for shard, (events, oldest_ms) in sorted(report.outbox_lag.items()):
        print(f"outbox {shard}: {events} events waiting, oldest {oldest_ms} ms")
    print(
        f"audited {report.accounts} accounts: "
        + ("clean" if report.clean else f"{len(report.differences)} differences, {len(report.breaks)} chain breaks")
    )
    return 0 if report.clean else 1


def rederive(settings: Settings) -> int:
    async def run(service: WalletService) -> Any:
        with progress("rederive", None, unit="transfers") as advance:
            return await ledger_of(service).rederive(advance)

    report = with_service(settings, run)
    for mismatch in report.mismatches:
        print(f"NOT TODAY'S RULES: {mismatch}")
    print(
        f"re-derived {report.transfers} transfers with today's rules: "
        + (
            "every one's ledger events are what today's code would write"
            if report.clean
            else f"{len(report.mismatches)} differ"
        )
    )
    return 0 if report.clean else 1


def existing_file(text: str) -> Path:
    path = Path(text)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"no file at {text}")
    return path


def add_commands(commands: Any) -> None:
    ledger = commands.add_parser("ledger", help="the hash-chained event ledger: relay, verify, replay, snapshot, audit")
    ledger_commands = ledger.add_subparsers(dest="ledger_command", required=True, metavar="ACTION")
    relay = ledger_commands.add_parser(
        "relay", help="copy every outbox row into the ledger now (serve does it continuously, unless WALLET_RELAY=off)"
    )
    relay.add_argument(
        "--follow",
        action="store_true",
        help="keep relaying until stopped (a relay process: also checkpoints and the daily snapshot)",
    )
    relay.add_argument("--watch-fd", type=int, help=argparse.SUPPRESS)  # `wallet serve`'s link: stop when it closes
    relay.set_defaults(handler=command_ledger_relay)
    ledger_commands.add_parser(
        "verify", help="check every stream's hash chain; name any edited, removed or reordered event"
    ).set_defaults(handler=command_ledger_verify)
    replay = ledger_commands.add_parser("replay", help="rebuild balances from the ledger at a moment")
    replay.add_argument("--at", help="ISO 8601 time with timezone (default: now)")
    replay.add_argument("--account", help="one account only")
    replay.set_defaults(handler=command_ledger_replay)
    snapshot = ledger_commands.add_parser(
        "snapshot",
        help="store every balance at a moment; replays start from it; "
        "or move one out (--export) and back (--import) for an offline audit",
    )
    snapshot.add_argument("--at", help="ISO 8601 time with timezone (default: now)")
    moved = snapshot.add_mutually_exclusive_group()
    moved.add_argument(
        "--export",
        dest="export_to",
        type=Path,
        metavar="FILE",
        help="write a stored snapshot (--id, default the latest) with its digest to FILE",
    )
    moved.add_argument(
        "--import",
        dest="import_from",
        type=existing_file,
        metavar="FILE",
        help="store an exported snapshot, refused unless its content matches its digest",
    )
    snapshot.add_argument("--id", type=int, help="the snapshot to export (default: the latest)")
    snapshot.add_argument(
        "--ledger", metavar="NAME", help="the ledger server to export from (needed when the topology has several)"
    )
    snapshot.set_defaults(handler=command_ledger_snapshot)
    ledger_commands.add_parser(
        "checkpoint",
        help="sign every stream's head (Ed25519, WALLET_LEDGER_KEY_FILE) into the "
        "append-only anchor file and ZooKeeper; verify checks the chain against them",
    ).set_defaults(handler=command_ledger_checkpoint)
    audit = ledger_commands.add_parser(
        "audit", help="compare live balances with the ledger replay; exit 1 on any difference"
    )
    audit.add_argument(
        "--rederive",
        action="store_true",
        help="instead: re-derive each recorded transfer's balance effects with today's rules and name "
        "every transfer whose ledger events they would not produce",
    )
    audit.set_defaults(handler=command_ledger_audit)
