"""`wallet ledger relay|verify|replay|snapshot|audit`: the hash-chained event ledger."""
from __future__ import annotations

import argparse
import asyncio
from datetime import datetime, timezone
from typing import Any

from coordinator.cli.common import ledger_of, load_topology, with_service
from coordinator.domain.money import format_amount
from coordinator.domain.validation import check_moment
from coordinator.runtime import event_loop
from coordinator.runtime.logs import configure_logging
from coordinator.runtime.settings import Settings
from coordinator.service.wallet import WalletService
from ledger.relay import relay_worker


def command_ledger_relay(args: argparse.Namespace, settings: Settings) -> int:
    if args.follow:
        return follow_relay(settings)
    moved = with_service(settings, lambda s: ledger_of(s).drain())
    print(f"relayed {moved} outbox rows into the ledger")
    return 0

def follow_relay(settings: Settings) -> int:
    """The relay as its own process (coordinators then run with WALLET_RELAY=off)."""
    configure_logging(settings.log_format, settings.log_level)

    async def run() -> None:
        async with WalletService(load_topology(settings), settings) as service:
            ledger = ledger_of(service)
            assert ledger.relay is not None, "the ledger service opens its relay"
            worker = relay_worker(ledger.relay)
            worker.start()
            try:
                await asyncio.Event().wait()  # until Ctrl-C or SIGTERM
            finally:
                await worker.stop()

    try:
        event_loop.run(run())
    except KeyboardInterrupt:
        pass
    return 0

def command_ledger_verify(args: argparse.Namespace, settings: Settings) -> int:
    breaks = with_service(settings, lambda s: ledger_of(s).verify())
    for found in breaks:
        print(f"BROKEN: {found}")
    print("hash chain intact" if not breaks else f"{len(breaks)} events do not chain")
    return 0 if not breaks else 1

def command_ledger_replay(args: argparse.Namespace, settings: Settings) -> int:
    at = check_moment(args.at, "--at") if args.at else datetime.now(timezone.utc)
    replay = with_service(settings, lambda s: ledger_of(s).replay(at, args.account))
    print(f"balances at {at.isoformat()} (from snapshot {replay.snapshot_id or 'none'})")
    for balance in replay.balances.values():
        print(f"{balance.account_id}\t{format_amount(balance.balance, balance.currency)} {balance.currency}"
              f"\treserved {format_amount(balance.reserved, balance.currency)}\tversion {balance.version}")
    return 0

def command_ledger_snapshot(args: argparse.Namespace, settings: Settings) -> int:
    at = check_moment(args.at, "--at") if args.at else datetime.now(timezone.utc)

    async def take(service: WalletService) -> int:
        await ledger_of(service).drain()
        return await ledger_of(service).snapshot(at)

    print(f"snapshot {with_service(settings, take)} of balances at {at.isoformat()}")
    return 0

def command_ledger_audit(args: argparse.Namespace, settings: Settings) -> int:
    report = with_service(settings, lambda s: ledger_of(s).audit())
    for found in report.breaks:
        print(f"BROKEN CHAIN: {found}")
    for difference in report.differences:
        print(f"DIFFERENCE {difference.account_id} on {difference.shard}: ledger says {difference.expected}, "
              f"live is {difference.actual} (balance, reserved, version): {difference.explanation}; "
              f"transactions {', '.join(str(t) for t in difference.transactions) or '-'}")
    for lag in report.lagging:
        print(f"lag {lag.account_id}: {lag.explanation}: {', '.join(str(t) for t in lag.transactions)}")
    for shard, (events, oldest_ms) in sorted(report.outbox_lag.items()):
        print(f"outbox {shard}: {events} events waiting, oldest {oldest_ms} ms")
    print(f"audited {report.accounts} accounts: " + ("clean" if report.clean else
          f"{len(report.differences)} differences, {len(report.breaks)} chain breaks"))
    return 0 if report.clean else 1


def add_commands(commands: Any) -> None:
    ledger = commands.add_parser("ledger", help="the hash-chained event ledger: relay, verify, replay, snapshot, audit")
    ledger_commands = ledger.add_subparsers(dest="ledger_command", required=True, metavar="ACTION")
    relay = ledger_commands.add_parser("relay", help="copy every outbox row into the ledger now "
                                       "(serve does it continuously, unless WALLET_RELAY=off)")
    relay.add_argument("--follow", action="store_true", help="keep relaying until stopped (a relay process)")
    relay.set_defaults(handler=command_ledger_relay)
    ledger_commands.add_parser("verify", help="check every stream's hash chain; name any edited, removed or reordered event"
                               ).set_defaults(handler=command_ledger_verify)
    replay = ledger_commands.add_parser("replay", help="rebuild balances from the ledger at a moment")
    replay.add_argument("--at", help="ISO 8601 time with timezone (default: now)")
    replay.add_argument("--account", help="one account only")
    replay.set_defaults(handler=command_ledger_replay)
    snapshot = ledger_commands.add_parser("snapshot", help="store every balance at a moment; replays start from it")
    snapshot.add_argument("--at", help="ISO 8601 time with timezone (default: now)")
    snapshot.set_defaults(handler=command_ledger_snapshot)
    ledger_commands.add_parser("audit", help="compare live balances with the ledger replay; exit 1 on any difference"
                               ).set_defaults(handler=command_ledger_audit)
