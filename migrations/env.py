"""Alembic environment: one shard per run, chosen by -x shard=<name> or -x dsn=<url>."""

from __future__ import annotations

from alembic import context

from migrations.environment import refuse, run, topology_from
from shards.schema import metadata


def shard_dsn() -> str:
    arguments = context.get_x_argument(as_dictionary=True)
    dsn = arguments.get("dsn") or context.config.attributes.get("dsn")
    if dsn:
        return dsn
    shard = arguments.get("shard")
    if not shard:
        refuse(
            "choose a shard: alembic -x shard=<name> upgrade head (or -x dsn=postgresql://...); "
            "`wallet db upgrade --all` migrates every shard"
        )
    topology, where = topology_from(arguments)
    if shard not in topology.shards:
        refuse(f"shard {shard!r} is not in the topology ({where}); it has {', '.join(sorted(topology.shards))}")
    # Revision 0004 records the slots this shard owns (its fence).
    context.config.attributes.setdefault("owned_slots", topology.slots_of(shard))
    return topology.shards[shard]


run(context, metadata, shard_dsn())
