"""How money moves between shards: one local transaction, two-phase commit, TC/C, Saga,
and the recovery that finishes what a dead coordinator left."""
