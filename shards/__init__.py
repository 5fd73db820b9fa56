"""Everything that touches a shard: its schema, every SQL statement, the pools, the migrations runner."""
