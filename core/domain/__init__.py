"""Domain values and pure decisions: no driver, no I/O. `shards/` and `ledger/` build on these."""
