"""The coordinator, in layers (each imports only the ones below it; tests/test_layers.py):

cli/        the `wallet` command, one module per command group
api/        the HTTP API (starlette): handlers, auth, rate limits, push, metrics, OpenAPI
service/    WalletService: routing, group commit, accounts, submission, status
protocols/  how money moves: one shard, 2PC, TC/C, Saga, recovery
cluster/    topology watch, leader election, slot migration
runtime/    settings, logs, event loop, background tasks, fault points, fan-out
domain/     values, money, errors, validation, and the pure planners
"""
