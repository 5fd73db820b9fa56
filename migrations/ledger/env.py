"""Alembic environment for the event ledger's database (not a shard)."""
from __future__ import annotations

from alembic import context

from ledger.schema import metadata
from migrations.environment import run, topology_from


def ledger_dsn() -> str:
    arguments = context.get_x_argument(as_dictionary=True)
    dsn = arguments.get("dsn") or context.config.attributes.get("dsn")
    if dsn:
        return dsn
    topology, path = topology_from(arguments)
    assert topology.ledger, f"{path} names no ledger database; pass -x dsn=postgresql://..."
    return topology.ledger


run(context, metadata, ledger_dsn())
