"""`wallet db upgrade|current`: the per-shard (and ledger) alembic migrations."""

from __future__ import annotations

import argparse
from typing import Any

from coordinator.cli.common import load_topology
from core.domain.errors import ConfigurationError
from core.runtime import event_loop
from core.runtime.fan_out import fan_out
from core.runtime.settings import Settings
from shards import migrate


def command_db_upgrade(args: argparse.Namespace, settings: Settings) -> int:
    if args.all == (args.shard is not None):
        raise ConfigurationError("choose one: --all or --shard NAME")
    topology = load_topology(settings)
    databases = {**dict(topology.shards), **{name: server.dsn for name, server in topology.ledgers.items()}}
    names = sorted(databases) if args.all else [args.shard]
    for name in names:
        if name not in databases:
            raise ConfigurationError(f"no shard {name!r} in the topology; it has {sorted(databases)}")
        if name in topology.ledgers:
            migrate.upgrade(databases[name], args.revision, target="ledger")
        else:
            migrate.upgrade_shard(topology, name, args.revision)
        print(f"{name}: upgraded to {args.revision}")
    return 0


def command_db_current(args: argparse.Namespace, settings: Settings) -> int:
    topology = load_topology(settings)
    head = migrate.head_revision()
    databases = [(name, dsn, "shard") for name, dsn in sorted(topology.shards.items())]
    databases += [(name, server.dsn, "ledger") for name, server in sorted(topology.ledgers.items())]

    async def read_all() -> list[migrate.ShardRevision]:
        read = await fan_out(databases, lambda database: migrate.read_revision(*database))
        read.raise_first()
        return [read.results[database] for database in databases]

    drift = False
    for revision in event_loop.run(read_all()):
        if revision.error:
            state = revision.error
        elif revision.revision is None:
            state = "not migrated"
        elif revision.current:
            state = "head"
        else:
            state = "behind head"
        drift |= not revision.current
        print(f"{revision.shard}\t{revision.revision or '-'}\t{state}")
    print(
        f"head: {head}"
        + (f" (ledger {migrate.head_revision('ledger')})" if topology.ledgers else "")
        + ("  DRIFT: shards differ from head" if drift else "  all shards at head")
    )
    return 1 if drift else 0


def add_commands(commands: Any) -> None:
    db = commands.add_parser("db", help="per-shard schema migrations (alembic)")
    db_commands = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    upgrade = db_commands.add_parser(
        "upgrade", help="migrate one shard (or the ledger: --shard ledger) or every database of the topology"
    )
    upgrade.add_argument("--all", action="store_true", help="every shard in the topology")
    upgrade.add_argument("--shard", help="one shard by name")
    upgrade.add_argument("--revision", default="head", help="target revision (default head)")
    upgrade.set_defaults(handler=command_db_upgrade)
    current = db_commands.add_parser("current", help="each shard's revision; exit 1 if any differs from head")
    current.set_defaults(handler=command_db_current)
