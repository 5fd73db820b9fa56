"""The append-only, hash-chained event ledger: relay, verification, replay, snapshots, audit."""
