"""The deterministic simulator (chaos/simulation/): the product's coordinators over simulated
shards on virtual time, faults at every statement. No server is started: these run in
`make test-fast`, a thousand seeds of them."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections import Counter
from dataclasses import replace
from uuid import uuid4

import pytest

from chaos.simulation.mutants import MUTANTS, applied
from chaos.simulation.runner import run_one, run_seeds
from chaos.simulation.shard import SimulatedShard, SimulatedShards
from chaos.simulation.world import FAULT_KINDS, Options, RunResult
from coordinator.protocols.tcc import TccCoordinator
from core.domain.transfers import Transfer, TransferResult
from shard_router.topology import Topology

SEEDS_FAST = 1000
MUTANT_SEEDS_MAX = 1000
# Caught after hundreds of seeds (a late Try needs a long delay and a Cancel meanwhile): in
# make test, not in the fast tier.
SLOW_TO_CATCH = {"null-compensation-dropped"}


def test_a_thousand_seeds_keep_every_invariant() -> None:
    """Every protocol, recovery and the relay under every fault, a thousand seeds: the checker
    finds nothing (money conserved, answers durable and stable, nothing left in doubt, the
    ledger's replay equal to the balances)."""
    summary = run_seeds(Options(seed=0), 0, SEEDS_FAST, processes=2)
    print(
        f"{summary.seeds} seeds in {summary.seconds:.1f} s ({summary.seeds_per_second:.0f}/s), {summary.faults} faults"
    )
    assert summary.seeds == SEEDS_FAST
    assert summary.failures == {}
    assert summary.faults > SEEDS_FAST  # faults were injected, many per run


def trace_of(seed: int, **changes: object) -> RunResult:
    return run_one(replace(Options(seed=seed), **changes))  # type: ignore[arg-type]


def test_a_seed_replays_bit_for_bit() -> None:
    """The same seed gives the same trace, step for step; another seed another one."""
    first, again, other = trace_of(7), trace_of(7), trace_of(8)
    assert first.trace == again.trace and first.statements == again.statements
    assert first.trace != other.trace


def test_a_seed_replays_in_another_process() -> None:
    """A seed printed by one process reproduces in another (string hashing differs per process)."""
    code = "from chaos.simulation.runner import run_one; from chaos.simulation.world import Options; " + (
        "import hashlib; print(hashlib.sha256(chr(10).join(run_one(Options(seed=11)).trace).encode()).hexdigest())"
    )
    digests = {
        subprocess.run(
            [sys.executable, "-c", code], env={"PYTHONHASHSEED": str(n)}, capture_output=True, text=True, check=True
        ).stdout
        for n in (1, 2)
    }
    assert len(digests) == 1


def test_every_fault_is_injected() -> None:
    """Across a few seeds, each kind of fault happens: the runs are not quietly fault-free."""
    seen: Counter[str] = Counter()
    for seed in range(40):
        for line in trace_of(seed).trace:
            for kind in ("drop", "lost_ack", "delay", "shard_crash", "coordinator_crash", "ledger", "duplicate"):
                if f"fault {kind} " in line or (kind == "duplicate" and " duplicate " in line):
                    seen[kind] += 1
    assert set(seen) == set(FAULT_KINDS), seen


def test_without_faults_every_transfer_gets_its_answer_at_once() -> None:
    """A calm world: no retries, no unknown answers, every transfer answered once."""
    result = trace_of(3, faults=frozenset())
    assert result.ok and result.faults == 0
    assert not [line for line in result.trace if "unknown" in line]


@pytest.mark.parametrize(
    "name", [pytest.param(name, marks=pytest.mark.slow) if name in SLOW_TO_CATCH else name for name in sorted(MUTANTS)]
)
def test_each_seeded_mutant_is_caught(name: str) -> None:
    """Proof that it bites: each mutant of the protocols is caught (docs/simulation.md's table)."""
    processes = 2 if name in SLOW_TO_CATCH else 1
    summary = run_seeds(Options(seed=0, mutant=name), 0, MUTANT_SEEDS_MAX, processes, stop_at_first=True)
    assert summary.failures, f"mutant {name} survived {MUTANT_SEEDS_MAX} seeds"


def test_a_mutant_is_undone_when_its_run_ends() -> None:
    """A mutant is in force only for its block: the same seed is clean again after it."""
    with applied("relay-deletes-first"):
        assert not trace_of(0).ok
    assert trace_of(0).ok


# Seeds that found a bug, kept: each failed before its fix (docs/simulation.md, "What it found").
REGRESSION_SEEDS = {1: "one transaction id twice in a TC/C batch failed the batch on an assertion"}


@pytest.mark.parametrize("seed", sorted(REGRESSION_SEEDS))
def test_a_seed_that_found_a_bug_stays_clean(seed: int) -> None:
    """Each seed that once found a bug (REGRESSION_SEEDS) runs clean."""
    result = trace_of(seed)
    assert result.ok, [a.detail for a in result.anomalies]


async def test_one_transaction_id_twice_in_a_tcc_batch_is_applied_once() -> None:
    """Regression (found by the simulator): a retry queued while its first request still waited
    (that request given up by its caller) put one id twice into one TC/C batch, and the batch
    failed on an assertion for every transfer in it. Now the id is applied once and both
    answer alike; a second request under the id moving other money is refused."""
    shards = {name: SimulatedShard(name, asyncio.get_running_loop().time) for name in ("shard0", "shard1")}
    topology = Topology.even({name: f"postgresql://simulated/{name}" for name in shards})
    sender, receiver = "acct-a", "acct-b"
    while topology.shard_of(sender) == topology.shard_of(receiver):
        receiver += "b"
    shards[topology.shard_of(sender)].create_account(sender, "USD", 100)
    shards[topology.shard_of(receiver)].create_account(receiver, "USD", 0)
    transfer = Transfer(str(uuid4()), "transfer", sender, receiver, 30, "USD", "tcc")
    other = transfer._replace(amount=31)

    class NoRecords:
        async def find(self, transaction_ids: list[str], skip: object = (), fresh: bool = False) -> dict[str, object]:
            return {}

    tcc = TccCoordinator(SimulatedShards(shards), lambda: topology)
    first, second, third = await tcc.apply_batch([transfer, transfer, other], NoRecords())  # type: ignore[arg-type]
    assert isinstance(first, TransferResult) and first.status == "success" and second == first
    assert not isinstance(third, TransferResult) and third.code == "idempotency_conflict"  # type: ignore[union-attr]
    assert shards[topology.shard_of(sender)].accounts[sender].balance == 70


def test_the_command_runs_seeds_and_reproduces_one() -> None:
    """`wallet simulate`: a run of seeds says seeds per second; one seed prints its trace and
    verdict; a mutant's failure prints the shortened trace; a bad option is refused by name."""
    wallet = [sys.executable, "-m", "coordinator.cli.main"]
    many = subprocess.run([*wallet, "simulate", "--seeds", "20", "--processes", "1"], capture_output=True, text=True)
    assert many.returncode == 0 and "20 seeds in" in many.stdout and "seeds/s" in many.stdout
    one = subprocess.run([*wallet, "simulate", "--seed", "5"], capture_output=True, text=True)
    assert one.returncode == 0 and "seed 5: clean" in one.stdout and "faults stop" in one.stdout
    caught = subprocess.run(
        [*wallet, "simulate", "--seeds", "4", "--processes", "1", "--mutant", "relay-deletes-first"],
        capture_output=True,
        text=True,
    )
    assert caught.returncode == 1 and "shortened to" in caught.stdout and "ANOMALY" in caught.stdout
    bad = subprocess.run([*wallet, "simulate", "--faults", "earthquake"], capture_output=True, text=True)
    assert bad.returncode != 0 and "earthquake" in bad.stderr
