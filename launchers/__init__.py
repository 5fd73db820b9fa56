"""Local launchers for development, tests, benchmarks and chaos runs: PostgreSQL servers and a
ZooKeeper on loopback. Tooling, not product: no product package imports them."""
