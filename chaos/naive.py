"""The design the seeds reject, kept only to prove the checker can fail.

A "transfer" here is two independent autocommit updates straight on the shards: debit
the sender on its shard, then credit the receiver on its. No record, no idempotency,
no outbox, no recovery. A coordinator crash between the two (a seeded coin) loses the
money in flight; a client retry after that unknown answer debits the sender again.

Nothing in coordinator/ can reach this module: it is not a mode of the API, and the
chaos runner uses it only when asked for `naive=True`.
"""

from __future__ import annotations

import random
import time

import asyncpg

from chaos.history import FAILED, SUCCESS, UNKNOWN, Answer, TransferRecord
from shard_router.topology import Topology
from wallet_client import RetryPolicy

CRASH_PROBABILITY = 0.2  # of a crash between the debit and the credit
POOL_SIZE_MAX = 4

DEBIT = """
UPDATE accounts SET balance = balance - $2
WHERE account_id = $1 AND balance - reserved >= $2
RETURNING balance
"""
CREDIT = "UPDATE accounts SET balance = balance + $2 WHERE account_id = $1"


class NaiveTransfers:
    def __init__(self, topology: Topology, seed: int | str) -> None:
        self.topology = topology
        self.rng = random.Random(seed)
        self.pools: dict[str, asyncpg.Pool] = {}
        self.started = time.monotonic()
        self.crashes = 0

    async def open(self) -> NaiveTransfers:
        for shard, dsn in sorted(self.topology.shards.items()):
            self.pools[shard] = await asyncpg.create_pool(dsn, min_size=1, max_size=POOL_SIZE_MAX)
        return self

    async def close(self) -> None:
        for pool in self.pools.values():
            await pool.close()
        self.pools = {}

    async def send(self, record: TransferRecord, currency: str, policy: RetryPolicy) -> Answer:
        """What a naive client does: try again until an answer is definite (which applies the
        debit again: the checker must see it)."""
        for _ in range(policy.attempts_max):
            answer = await self.transfer(record.request_body(currency))
            record.answers.append(answer)
            if answer.definite or (policy.give_up is not None and policy.give_up()):
                break
        return record.answers[-1]

    async def transfer(self, body: dict[str, str]) -> Answer:
        amount = int(body["amount"].replace(".", ""))
        source, target = body["from_account"], body["to_account"]
        async with self.pools[self.topology.shard_of(source)].acquire() as connection:
            if await connection.fetchval(DEBIT, source, amount) is None:
                return Answer(FAILED, "insufficient_funds", time.monotonic() - self.started)
        if self.rng.random() < CRASH_PROBABILITY:
            self.crashes += 1  # the coordinator died here: the credit never happens
            return Answer(UNKNOWN, "coordinator_crashed", time.monotonic() - self.started)
        async with self.pools[self.topology.shard_of(target)].acquire() as connection:
            await connection.execute(CREDIT, target, amount)
        return Answer(SUCCESS, None, time.monotonic() - self.started)
