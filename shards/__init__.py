"""Everything that touches a shard: schema, SQL, pools, and the local-cluster launcher."""
