"""Readiness: the topology is loaded and every shard (and the ledger) answers at the migration
head. Asked of the engine (api/backend.py), which holds the topology; /readyz serves it."""

from __future__ import annotations

import asyncio

import msgspec

from coordinator.api import schemas
from coordinator.api.problems import PROBLEM_MEDIA, problem_body
from coordinator.api.views import JSON
from coordinator.service.wallet import WalletService
from core.runtime.fan_out import fan_out
from shards import migrate, replication

READY_CHECK_TIMEOUT_S = 5.0
# A replicated shard whose primary has no synchronous standby still takes writes
# (synchronous_mode_strict off: launchers/patroni.py says why), so the service stays ready;
# the check names the shard, and the alert is the operator's.
NO_SYNCHRONOUS_STANDBY = "ok, degraded: no synchronous standby (writes continue on the primary alone)"


async def readiness(service: WalletService, heads: dict[str, str]) -> tuple[int, bytes, str]:
    """(status, body, media type): 200 with each check, or 503 naming what is not ready."""
    databases = [(name, dsn, "shard") for name, dsn in sorted(service.topology.shards.items())]
    # every ledger server: one that is down stops only its streams' relaying, and is named
    databases += [(name, server.dsn, "ledger") for name, server in sorted(service.topology.ledgers.items())]

    async def one(name: str, dsn: str, target: str) -> str:
        try:
            async with asyncio.timeout(READY_CHECK_TIMEOUT_S):
                found = await migrate.read_revision(name, dsn, target)
                if found.error:
                    return found.error
                if found.revision != heads[target]:
                    return f"at {found.revision}, head is {heads[target]}"
                if replication.is_replicated(dsn) and await replication.synchronous_standbys_at(dsn) == 0:
                    return NO_SYNCHRONOUS_STANDBY
                return "ok"
        except TimeoutError:
            return "unreachable: no answer"

    answers = await fan_out(databases, lambda database: one(*database))
    checks = {
        name: answers.results.get(database) or f"failed: {answers.errors[database]!r}"
        for database in databases
        for name in database[:1]
    }
    if any(not answer.startswith("ok") for answer in checks.values()):
        detail = "not ready: " + "; ".join(
            f"{name}: {answer}" for name, answer in checks.items() if not answer.startswith("ok")
        )
        return 503, problem_body(503, "shard_unavailable", detail), PROBLEM_MEDIA
    return 200, msgspec.json.encode(schemas.Ready("ready", checks, service.topology.version)), JSON
