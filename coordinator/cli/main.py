"""`wallet`: the command line for developers, operators and DBAs.

Every command group is a module here. `wallet bench` and `wallet chaos` hand their arguments
to the benchmark and the chaos runner, which run as programs of their own (`python -m
bench.run`): development tools above the product, which the CLI never imports.
"""

from __future__ import annotations

import argparse
import os
import sys
import uuid

import asyncpg

from coordinator.cli import accounts, db, dev, ledger, serve, tokens, topology, transfers
from core.domain.errors import ConfigurationError, WalletError
from core.runtime import fault_points
from core.runtime.settings import Settings
from shard_router.topology import TopologyError
from shards.errors import ShardError

# An operating error (a setting, an argument, a file) exits with this, as argparse does.
EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wallet",
        description="Wallet-to-wallet money transfers over sharded PostgreSQL. "
        "Settings come from WALLET_HOME (default .wallet) and WALLET_TOPOLOGY (default $WALLET_HOME/topology.json).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in (dev, serve, tokens, db, accounts, transfers):
        group.add_commands(commands)
    commands.add_parser(
        "bench",
        help="the benchmark with its baselines (pgbench, unbatched), measured in one run; "
        "`wallet bench --help` for its options",
        add_help=False,
    )
    commands.add_parser(
        "chaos",
        help="the bank workload under faults (kills, pauses, a faulty proxy) and its "
        "checker; `wallet chaos --minutes N --seed S`, `wallet chaos --help`; `wallet chaos multihost`: "
        "docker/compose.yaml run natively, a network namespace per service, with partitions (root)",
        add_help=False,
    )
    commands.add_parser(
        "simulate",
        help="the protocols over simulated shards on virtual time, faults at every statement, "
        "thousands of seeds a minute; `wallet simulate --seeds N`, `wallet simulate --seed S`, "
        "`wallet simulate --help`",
        add_help=False,
    )
    ledger.add_commands(commands)
    topology.add_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        return run(argv)
    except ConfigurationError as error:
        print(f"wallet: error: {error}", file=sys.stderr)
        return EXIT_USAGE


# Development tools the CLI reaches by running them, each a program with its own parser and
# throwaway cluster: the CLI stays below them in the layers (tests/test_layers.py).
PROGRAMS = {
    ("bench", "ledger"): "bench.ledger_replay",
    ("bench", "failover"): "bench.failover",
    ("bench",): "bench.run",
    ("chaos", "multihost"): "chaos.multihost",
    ("chaos",): "chaos.runner",
    ("simulate",): "chaos.simulation",
}


def run(argv: list[str]) -> int:
    for words, module in PROGRAMS.items():
        if tuple(argv[: len(words)]) == words:
            sys.stdout.flush()
            os.execv(sys.executable, [sys.executable, "-m", module, *argv[len(words) :]])
    args = build_parser().parse_args(argv)
    if getattr(args, "transaction_id", "unset") is None:
        args.transaction_id = str(uuid.uuid4())
    settings = Settings.from_environment()
    fault_points.arm(settings.fault_point)
    try:
        return int(args.handler(args, settings))
    except WalletError as error:
        print(f"error: {error.code}: {error.detail}", file=sys.stderr)
        return EXIT_USAGE
    except (TopologyError, ShardError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except asyncpg.UndefinedTableError as error:
        print(f"error: a shard is not migrated ({error}); run `wallet db upgrade --all`", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
