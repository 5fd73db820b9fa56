"""`wallet simulate`: the protocols over simulated shards, many seeds a second.

wallet simulate --seeds 10000              every seed clean? seeds per second
wallet simulate --seed 4242                one seed: its verdict and trace, bit for bit again
wallet simulate --mutant all --seeds 500   each seeded mutant, and the seeds it took to catch
"""

from __future__ import annotations

import argparse
from dataclasses import replace

from chaos.simulation.mutants import MUTANTS
from chaos.simulation.runner import counts, relevant_trace, run_one, run_seeds, shortened
from chaos.simulation.world import FAULT_KINDS, Options

SEEDS_DEFAULT = 1000


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wallet simulate",
        description="Run the coordinators (every protocol, recovery, the relay) over simulated shards and a "
        "simulated ledger on virtual time, with faults at every statement; check each run with the bank "
        "checker. Deterministic: a seed replays bit for bit.",
    )
    parser.add_argument("--seeds", type=int, default=SEEDS_DEFAULT, help="how many seeds (default %(default)s)")
    parser.add_argument("--first", type=int, default=0, help="the first seed of --seeds (default 0)")
    parser.add_argument("--seed", type=int, help="run this one seed and print its trace")
    parser.add_argument(
        "--faults",
        default=",".join(FAULT_KINDS),
        help=f"which faults, comma-separated, or 'none' (default: all of {', '.join(FAULT_KINDS)})",
    )
    parser.add_argument("--fault-rate", type=float, default=Options.fault_rate, help="faults per statement")
    parser.add_argument("--transfers", type=int, default=Options.transfers, help="transfers per run")
    parser.add_argument("--accounts", type=int, default=Options.accounts, help="accounts per run")
    parser.add_argument("--shards", type=int, default=Options.shards, help="simulated shards")
    parser.add_argument("--coordinators", type=int, default=Options.coordinators, help="coordinator processes")
    parser.add_argument(
        "--mutant", help=f"run against a seeded mutant: one of {', '.join(sorted(MUTANTS))}, or 'all' (a table)"
    )
    parser.add_argument("--processes", type=int, default=0, help="worker processes (default: one per core)")
    parser.add_argument("--trace", action="store_true", help="with --seed: the whole trace, not its relevant lines")
    return parser


def options_of(args: argparse.Namespace) -> Options:
    faults = frozenset() if args.faults == "none" else frozenset(f for f in args.faults.split(",") if f)
    unknown = faults - set(FAULT_KINDS)
    if unknown:
        raise SystemExit(f"wallet simulate: error: unknown faults {sorted(unknown)}: choose from {FAULT_KINDS}")
    if not 0 <= args.fault_rate <= 1:
        raise SystemExit("wallet simulate: error: --fault-rate is a probability, 0..1")
    if args.transfers < 1 or args.accounts < 2 or args.shards < 1 or args.coordinators < 1 or args.seeds < 1:
        raise SystemExit("wallet simulate: error: at least 1 transfer, 2 accounts, 1 shard, 1 coordinator, 1 seed")
    if args.mutant not in (None, "all") and args.mutant not in MUTANTS:
        raise SystemExit(f"wallet simulate: error: no mutant {args.mutant!r}: one of {', '.join(sorted(MUTANTS))}")
    return Options(
        seed=args.first,
        shards=args.shards,
        accounts=args.accounts,
        transfers=args.transfers,
        coordinators=args.coordinators,
        faults=faults,
        fault_rate=args.fault_rate,
        mutant=None if args.mutant == "all" else args.mutant,
    )


def one_seed(options: Options, whole_trace: bool) -> int:
    result = run_one(options)
    lines = result.trace if whole_trace or result.ok else relevant_trace(result)
    print("\n".join(lines))
    print(
        f"seed {options.seed}: {'clean' if result.ok else 'FAILED'}: {result.transfers} transfers "
        f"({result.succeeded} succeeded), {result.statements} statements, {result.faults} faults, "
        f"{result.virtual_s:.1f} s of virtual time"
    )
    for anomaly in result.anomalies:
        print(f"  {anomaly.kind}: {anomaly.detail}")
    return 0 if result.ok else 1


def many_seeds(options: Options, count: int, processes: int) -> int:
    summary = run_seeds(options, options.seed, count, processes)
    print(
        f"{summary.seeds} seeds in {summary.seconds:.1f} s: {summary.seeds_per_second:.0f} seeds/s, "
        f"{summary.statements} statements, {summary.faults} faults injected; "
        f"{len(summary.failures)} failed {dict(counts(summary)) or ''}"
    )
    if not summary.failures:
        return 0
    for seed, kinds in sorted(summary.failures.items())[:20]:
        print(f"  seed {seed}: {', '.join(kinds)}")
    first = min(summary.failures)
    small, result = shortened(replace(options, seed=first))
    print(
        f"\nseed {first}, shortened to {small.transfers} transfers (`wallet simulate --seed {first} "
        f"--transfers {small.transfers}`):"
    )
    print("\n".join(relevant_trace(result)))
    return 1


def mutant_table(options: Options, count: int, processes: int) -> int:
    print("| mutant | what it breaks | caught at seed | seeds run | what the checker saw |")
    print("|---|---|---:|---:|---|")
    survived = 0
    for name, mutant in sorted(MUTANTS.items()):
        summary = run_seeds(replace(options, mutant=name), options.seed, count, processes, stop_at_first=True)
        if summary.failures:
            first = min(summary.failures)
            print(
                f"| `{name}` | {mutant.description} | {first} | {first - options.seed + 1} | "
                f"{', '.join(summary.failures[first])} |"
            )
        else:
            survived += 1
            print(f"| `{name}` | {mutant.description} | survived | {count} | nothing |")
    return 0 if not survived else 1


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    options = options_of(args)
    if args.seed is not None:
        return one_seed(replace(options, seed=args.seed), args.trace)
    if args.mutant == "all":
        return mutant_table(options, args.seeds, args.processes)
    return many_seeds(options, args.seeds, args.processes)
