"""The bank workload's moves, shared by every run that drives it (`wallet chaos` and its
multi-host run): the next random transfer, the retries that learn what happened to each
transfer whose answer was unknown, and the wait until recovery and the relay have left
nothing behind."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Protocol

import asyncpg

from chaos.checker import leftovers
from chaos.history import Answer, TransferRecord
from shard_router.topology import Topology
from wallet_client import RetryPolicy

CURRENCY = "USD"
MODES = ("2pc", "tcc", "saga", "local")
DEPOSIT_MINOR = 100_000  # 1,000.00 per account
TRANSFER_MINOR_MAX = 40_000  # some transfers are refused for funds
RESOLVE_ATTEMPTS_MAX = 120  # after the faults: retries of each still-unknown transfer
RESOLVE_PAUSE_S = 1.0
RESOLVE_CONCURRENCY = 16
CONVERGE_TIMEOUT_S = 180.0  # recovery aborts undecided batches after 10 s, resumes TC/C after 10 s
CONVERGE_POLL_S = 1.0


class Transport(Protocol):
    """How a run sends a transfer (REST, or the naive two updates), telling its record every answer."""

    async def send(self, record: TransferRecord, currency: str, policy: RetryPolicy) -> Answer: ...


def next_transfer(
    rng: random.Random, shards: Sequence[str], by_shard: dict[str, list[str]], now_s: float
) -> TransferRecord:
    """A transfer in a random mode: between two shards, or (local) within one."""
    mode = rng.choice(MODES)
    if mode == "local":
        source, target = rng.sample(by_shard[rng.choice(shards)], 2)
    else:
        debit_shard, credit_shard = rng.sample(list(shards), 2)
        source, target = rng.choice(by_shard[debit_shard]), rng.choice(by_shard[credit_shard])
    return TransferRecord(
        str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        source,
        target,
        rng.randint(1, TRANSFER_MINOR_MAX),
        mode,
        now_s,
    )


async def resolve_unknowns(transport: Transport, history: list[TransferRecord], say: Callable[[str], None]) -> None:
    """After the faults: what a client does with an unknown outcome, retry with the same
    transaction id until the service says what happened (bounded)."""
    pending = [r for r in history if r.final is None]
    say(f"resolving {len(pending)} transfers with unknown outcomes")
    gate = asyncio.Semaphore(RESOLVE_CONCURRENCY)

    async def resolve(record: TransferRecord) -> None:
        async with gate:
            await transport.send(
                record,
                CURRENCY,
                RetryPolicy(
                    attempts_max=RESOLVE_ATTEMPTS_MAX,
                    wait_s_max=RESOLVE_PAUSE_S,
                    deadline_s=RESOLVE_ATTEMPTS_MAX * RESOLVE_PAUSE_S * 2,
                ),
            )

    await asyncio.gather(*(resolve(r) for r in pending))


async def converge(
    topology: Topology, accounts: list[str], history: list[TransferRecord], say: Callable[[str], None]
) -> bool:
    """Until recovery has finished every prepared branch and unfinished phase and the relay
    has drained the run's outbox rows (bounded): whether it got there."""
    transaction_ids = [uuid.UUID(r.transaction_id) for r in history]
    deadline = time.monotonic() + CONVERGE_TIMEOUT_S
    left = (-1, -1, -1)
    while time.monotonic() < deadline:
        try:
            left = await leftovers(topology, accounts, transaction_ids)
        except (
            OSError,
            TimeoutError,
            asyncpg.PostgresError,
            asyncpg.InterfaceError,
        ) as error:  # a server still out of reach: ask again
            say(f"converging: {error!r}")
        if left == (0, 0, 0):
            say("converged: nothing prepared, every phase done, outbox relayed")
            return True
        await asyncio.sleep(CONVERGE_POLL_S)
    say(f"did not converge within {CONVERGE_TIMEOUT_S:.0f} s (prepared, unfinished, outbox) = {left}")
    return False
