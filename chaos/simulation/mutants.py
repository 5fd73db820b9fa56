"""Seeded mutants: the simulator's proof that it bites. Each is one textual change to the
product's own source (as a mutation tester makes it), applied in this process for as long as
a run lasts: the mutated module's functions and its classes' methods replace the originals,
then the originals come back. `wallet simulate --mutant NAME` runs seeds against one; the
table in docs/simulation.md says how many seeds each took to be caught.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import FunctionType
from typing import Any


@dataclass(frozen=True)
class Mutant:
    name: str
    module: str
    original: str
    mutated: str
    description: str


MUTANTS = {
    mutant.name: mutant
    for mutant in (
        Mutant(
            "commit-before-decision",
            "coordinator.protocols.two_phase",
            "                    if batch.gids:\n                        await self._decide(batch)\n",
            "                    if batch.gids:\n                        await self._commit_prepared(batch)\n"
            "                        await self._decide(batch)\n",
            "2PC: the prepared branches committed before the decision is durable",
        ),
        Mutant(
            "decision-not-written",
            "coordinator.protocols.two_phase",
            "commit_decision=batch.batch_id if shard == batch.decision_shard else None,",
            "commit_decision=None,",
            "2PC: the decision shard commits its part without the 'commit' decision row",
        ),
        Mutant(
            "null-compensation-dropped",
            "core.domain.branch_plan",
            '                if tried is None:\n                    insert(op, "try", "cancel")\n',
            "                if tried is None:\n",
            "TC/C and Saga: a Cancel whose Try never ran records no barrier marker (a late Try is let in)",
        ),
        Mutant(
            "credit-before-debit-try",
            "coordinator.protocols.branch_flow",
            "        try:\n            starts = await self.per_shard(\n",
            "        await self.try_credits([Flow(t) for t in transfers])\n"
            "        try:\n            starts = await self.per_shard(\n",
            "TC/C and Saga: the credit branch's Try runs before the debit's (a Saga credit lands unfunded)",
        ),
        Mutant(
            "recovery-aborts-committed",
            "coordinator.protocols.recovery",
            "if await session.commit_prepared(member.gid):",
            "if await session.rollback_prepared(member.gid):",
            "recovery rolls back a prepared branch whose batch's decision is commit",
        ),
        Mutant(
            "relay-deletes-first",
            "ledger.relay",
            "        partition = self.partitions.holding(stream)\n",
            "        async with self.shards.session(stream) as session:\n"
            "            await session.delete_relayed([row[0] for row in rows])\n"
            "        partition = self.partitions.holding(stream)\n",
            "the relay deletes outbox rows before the ledger has committed them",
        ),
        Mutant(
            "retry-re-executes",
            "core.domain.batch_plan",
            "        earlier = stored.get(transaction_id)\n",
            "        earlier = None\n",
            "a retry of a recorded transfer is planned as new instead of replaying its record",
        ),
    )
}


@contextmanager
def applied(name: str) -> Iterator[Mutant]:
    """The mutant in force (this process) until the block ends."""
    mutant = MUTANTS.get(name)
    if mutant is None:
        raise KeyError(f"no mutant {name!r}: one of {', '.join(sorted(MUTANTS))}")
    module = importlib.import_module(mutant.module)
    source = inspect.getsource(module)
    assert source.count(mutant.original) == 1, f"mutant {name}: its original text must occur once in {module.__file__}"
    namespace: dict[str, Any] = {"__name__": mutant.module, "__file__": module.__file__}
    exec(compile(source.replace(mutant.original, mutant.mutated), f"<mutant {name}>", "exec"), namespace)
    saved: list[tuple[object, str, object]] = []
    for attribute, new in namespace.items():
        old = getattr(module, attribute, None)
        if isinstance(new, FunctionType) and new.__module__ == mutant.module:
            # Everywhere it was imported by name, too (`from module import function`).
            for holder in [m for m in list(sys.modules.values()) if m is not None]:
                if vars(holder).get(attribute) is old:
                    saved.append((holder, attribute, old))
                    setattr(holder, attribute, new)
        elif isinstance(new, type) and isinstance(old, type) and new.__module__ == mutant.module:
            for method, function in vars(new).items():
                if isinstance(function, FunctionType):
                    saved.append((old, method, vars(old).get(method)))
                    setattr(old, method, function)
    try:
        yield mutant
    finally:
        for owner, attribute, old in reversed(saved):
            setattr(owner, attribute, old)
