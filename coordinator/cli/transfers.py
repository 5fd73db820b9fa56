"""`wallet transfer`, `wallet show-transfer` and `wallet recover`."""

from __future__ import annotations

import argparse
from typing import Any

from coordinator.api.views import plain, transfer_view
from coordinator.cli.common import print_json, with_service
from core.domain.transfers import MODES
from core.runtime.settings import Settings


def seconds(text: str) -> float:
    """A non-negative number of seconds."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 86_400:
        raise argparse.ArgumentTypeError(f"must be a number of seconds in 0..86400, got {text!r}")
    return value


def command_transfer(args: argparse.Namespace, settings: Settings) -> int:
    result = with_service(
        settings,
        lambda s: s.transfer(
            args.from_account, args.to_account, args.amount, args.currency, args.transaction_id, args.mode
        ),
    )
    print_json(plain(transfer_view(result)))
    return 0 if result.status == "success" else 1


def command_transfer_show(args: argparse.Namespace, settings: Settings) -> int:
    print_json(plain(transfer_view(with_service(settings, lambda s: s.get_transfer(args.transaction_id)))))
    return 0


def command_recover(args: argparse.Namespace, settings: Settings) -> int:
    report = with_service(settings, lambda s: s.recover(abort_after_ms=int(args.abort_after_s * 1000)))
    print(
        f"committed {report.committed}, rolled back {report.rolled_back}, "
        f"waiting {report.waiting} (younger than {args.abort_after_s}s), "
        f"resumed {report.resumed} TC/C or Saga transfers, errors {len(report.errors)}"
    )
    for error in report.errors:
        print(f"  {error}")
    return 0 if not report.errors else 1


def add_commands(commands: Any) -> None:
    transfer = commands.add_parser("transfer", help="move money between two accounts (idempotent)")
    transfer.add_argument("from_account")
    transfer.add_argument("to_account")
    transfer.add_argument("amount", help="decimal string, e.g. 10.00")
    transfer.add_argument("--currency", required=True)
    transfer.add_argument("--mode", choices=MODES, help="cross-shard protocol (default WALLET_MODE)")
    transfer.add_argument("--transaction-id", default=None, help="UUID idempotency key (default: a new one)")
    transfer.set_defaults(handler=command_transfer)
    transfer_show = commands.add_parser("show-transfer", help="a transfer's status by transaction id")
    transfer_show.add_argument("transaction_id")
    transfer_show.set_defaults(handler=command_transfer_show)
    recover = commands.add_parser(
        "recover", help="finish in-doubt two-phase transfers once (`wallet serve` also does it in the background)"
    )
    recover.add_argument(
        "--abort-after-s",
        type=seconds,
        default=10.0,
        help="roll back undecided prepared transactions older than this (default 10)",
    )
    recover.set_defaults(handler=command_recover)
