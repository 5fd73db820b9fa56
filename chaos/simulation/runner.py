"""Many seeds: `wallet simulate`. Seeds run in worker processes (one world per seed, nothing
shared); a failing seed is run again alone to print its trace, shortened: the smallest
workload that still fails with it (the seed fixes every other choice), and of its trace the
faults, crashes and the lines of the transactions the checker names."""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace

from chaos.simulation.mutants import applied
from chaos.simulation.world import Options, RunResult, simulate

SEEDS_PER_TASK = 50
SHORTEN_TRIES_MAX = 6
TRACE_SHOWN_MAX = 120


@dataclass
class Summary:
    seeds: int = 0
    seconds: float = 0.0
    statements: int = 0
    faults: int = 0
    failures: dict[int, list[str]] = field(default_factory=dict)  # seed -> anomaly kinds

    @property
    def seeds_per_second(self) -> float:
        return self.seeds / self.seconds if self.seconds else 0.0


def run_one(options: Options) -> RunResult:
    """One seed, quietly (the product's own logs are for operators, not for a simulation)."""
    logging.disable(logging.CRITICAL)
    try:
        if options.mutant is None:
            return simulate(options)
        with applied(options.mutant):
            return simulate(options)
    finally:
        logging.disable(logging.NOTSET)


def _run_chunk(base: Options, seeds: list[int]) -> list[tuple[int, list[str], int, int]]:
    results = []
    for seed in seeds:
        result = run_one(replace(base, seed=seed))
        results.append((seed, sorted({a.kind for a in result.anomalies}), result.statements, result.faults))
        if result.anomalies and base.mutant is not None:
            break  # a mutant caught: the rest of the chunk says nothing more
    return results


def run_seeds(base: Options, first: int, count: int, processes: int = 0, stop_at_first: bool = False) -> Summary:
    """Seeds first..first+count-1 of `base`'s world; `processes` 0: one per core."""
    workers = processes or os.cpu_count() or 1
    chunks = [
        list(range(start, min(start + SEEDS_PER_TASK, first + count)))
        for start in range(first, first + count, SEEDS_PER_TASK)
    ]
    summary = Summary()
    started = time.monotonic()
    if workers == 1:
        parts = (_run_chunk(base, chunk) for chunk in chunks)
        _collect(summary, parts, stop_at_first)
    else:
        with ProcessPoolExecutor(workers) as pool:
            futures = [pool.submit(_run_chunk, base, chunk) for chunk in chunks]
            _collect(summary, (future.result() for future in futures), stop_at_first)
            pool.shutdown(cancel_futures=True)  # what has not started, once a failure is enough
    summary.seconds = time.monotonic() - started
    return summary


def _collect(summary: Summary, parts: Iterable[list[tuple[int, list[str], int, int]]], stop_at_first: bool) -> None:
    for part in parts:
        for seed, kinds, statements, faults in part:
            summary.seeds += 1
            summary.statements += statements
            summary.faults += faults
            if kinds:
                summary.failures[seed] = kinds
        if stop_at_first and summary.failures:
            return


def shortened(options: Options) -> tuple[Options, RunResult]:
    """The smallest workload (transfers halved while it still fails) of a failing seed, and its run."""
    result = run_one(options)
    assert result.anomalies, f"seed {options.seed} does not fail"
    kinds = {a.kind for a in result.anomalies}
    for _ in range(SHORTEN_TRIES_MAX):
        smaller = replace(options, transfers=options.transfers // 2)
        if smaller.transfers < 1:
            break
        again = run_one(smaller)
        if not kinds & {a.kind for a in again.anomalies}:
            break
        options, result = smaller, again
    return options, result


def relevant_trace(result: RunResult) -> list[str]:
    """The trace lines that led there: every fault, crash, restart and anomaly, and every line
    of the transactions the anomalies name."""
    named = {word[:8] for anomaly in result.anomalies for word in anomaly.detail.replace(":", " ").split()}
    keep = ("fault ", "crash ", "restart ", "ANOMALY", "BUG", "faults stop", "recovery:")
    lines = [
        line for line in result.trace if any(k in line for k in keep) or any(n in line for n in named if len(n) == 8)
    ]
    return lines[-TRACE_SHOWN_MAX:]


def counts(summary: Summary) -> Counter[str]:
    return Counter(kind for kinds in summary.failures.values() for kind in kinds)
