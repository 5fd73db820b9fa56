"""`wallet accounts create|show|freeze` and `wallet deposit`."""

from __future__ import annotations

import argparse
from typing import Any

from coordinator.api.views import account_view, plain, transfer_view
from coordinator.cli.common import print_json, with_service
from core.domain.accounts import AccountStatus
from core.runtime.settings import Settings


def command_accounts_create(args: argparse.Namespace, settings: Settings) -> int:
    account, created = with_service(settings, lambda s: s.create_account(args.account_id, args.owner, args.currency))
    print_json({**plain(account_view(account)), "created": created})
    return 0


def command_accounts_show(args: argparse.Namespace, settings: Settings) -> int:
    print_json(plain(account_view(with_service(settings, lambda s: s.get_account(args.account_id)))))
    return 0


def command_accounts_freeze(args: argparse.Namespace, settings: Settings) -> int:
    status: AccountStatus = "active" if args.unfreeze else "frozen"
    print_json(plain(account_view(with_service(settings, lambda s: s.set_account_status(args.account_id, status)))))
    return 0


def command_deposit(args: argparse.Namespace, settings: Settings) -> int:
    result = with_service(settings, lambda s: s.deposit(args.account_id, args.amount, args.transaction_id))
    print_json(plain(transfer_view(result)))
    return 0 if result.status == "success" else 1


def add_commands(commands: Any) -> None:
    accounts = commands.add_parser("accounts", help="create and inspect accounts")
    account_commands = accounts.add_subparsers(dest="accounts_command", required=True, metavar="ACTION")
    create = account_commands.add_parser("create", help="open an account")
    create.add_argument("account_id")
    create.add_argument("--owner", required=True)
    create.add_argument("--currency", required=True, help="ISO 4217 code, e.g. USD")
    create.set_defaults(handler=command_accounts_create)
    show = account_commands.add_parser("show", help="an account's balance, available and reserved funds, status")
    show.add_argument("account_id")
    show.set_defaults(handler=command_accounts_show)
    freeze = account_commands.add_parser("freeze", help="freeze an account (no money in or out)")
    freeze.add_argument("account_id")
    freeze.add_argument("--unfreeze", action="store_true", help="make it active again")
    freeze.set_defaults(handler=command_accounts_freeze)

    deposit = commands.add_parser("deposit", help="money enters an account from outside (idempotent)")
    deposit.add_argument("account_id")
    deposit.add_argument("amount", help="decimal string in the account's currency, e.g. 10.00")
    deposit.add_argument("--transaction-id", default=None, help="UUID idempotency key (default: a new one)")
    deposit.set_defaults(handler=command_deposit)
