"""Alembic environment for the event ledger's database (not a shard)."""

from __future__ import annotations

from alembic import context

from ledger.schema import metadata
from migrations.environment import refuse, run, topology_from


def ledger_dsn() -> str:
    arguments = context.get_x_argument(as_dictionary=True)
    dsn = arguments.get("dsn") or context.config.attributes.get("dsn")
    if dsn:
        return dsn
    topology, where = topology_from(arguments)
    if not topology.ledger:
        refuse(f"the topology ({where}) names no ledger database; pass -x dsn=postgresql://...")
    return topology.ledger


run(context, metadata, ledger_dsn())
