"""Alembic environment for the event ledger's database (not a shard)."""

from __future__ import annotations

from alembic import context

from ledger.schema import metadata
from migrations.environment import refuse, run, topology_from


def ledger_dsn() -> str:
    """-x dsn=..., or -x ledger=NAME from the topology (the only ledger server when it has one)."""
    arguments = context.get_x_argument(as_dictionary=True)
    dsn = arguments.get("dsn") or context.config.attributes.get("dsn")
    if dsn:
        return dsn
    topology, where = topology_from(arguments)
    if not topology.ledgers:
        refuse(f"the topology ({where}) names no ledger database; pass -x dsn=postgresql://...")
    name = arguments.get("ledger")
    if name is None and len(topology.ledgers) > 1:
        refuse(f"the topology ({where}) has ledger servers {sorted(topology.ledgers)}: choose one with -x ledger=NAME")
    name = name or next(iter(topology.ledgers))
    if name not in topology.ledgers:
        refuse(f"no ledger server {name!r} in the topology ({where}); it has {sorted(topology.ledgers)}")
    return topology.ledgers[name].dsn


run(context, metadata, ledger_dsn())
