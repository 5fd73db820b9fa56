"""What coordinator processes share: the topology they follow, the leader they elect, and
moving slots between shards."""
