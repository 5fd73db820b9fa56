"""The bottom of the house, beneath everything else (tests/test_layers.py):

  runtime/    process plumbing every layer may use: settings (every WALLET_* read once), logs,
              the event loop, background tasks, fault points, the fan-out over shards, gates
  domain/     the domain's values (transfers, accounts, money), its errors and its pure
              decisions (validation, the batch and branch planners); no driver, no I/O

`shard_router/`, `shards/`, `ledger/`, `launchers/` and `coordinator/` build on these.
"""
