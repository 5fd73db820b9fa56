"""Account id -> slot -> shard. Pure: no I/O here; topology stores sit beside it."""

from shard_router.slots import SLOT_COUNT, slot_of
from shard_router.topology import Topology, TopologyError

__all__ = ["SLOT_COUNT", "slot_of", "Topology", "TopologyError"]
