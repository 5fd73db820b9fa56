"""When the next batch may start beside the one in flight.

Batches overlap (coordinator/service/group_commit.py), but only once the one in flight lets
the next start: two-phase commit calls let_next_start() at its commit point (its last round
trip, COMMIT PREPARED, then runs beside the next batch); other batches let it start when they
end. So only one batch of a process at a time is taking locks: two batches locking several
shards at once could wait on each other across servers, where no server sees the cycle
(coordinator/protocols/two_phase.py locks every shard at once on that ground).

Measured (docs/figures.md): letting the next round start as soon as a round
held its locks split rounds in two (45 transfers instead of 64 at 128 connections) and cost
more CPU per transfer than it saved in waiting; at the commit point it costs nothing.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable

_LET_NEXT_START: contextvars.ContextVar[Callable[[], None] | None] = contextvars.ContextVar(
    "let_next_start", default=None
)


def let_next_start() -> None:
    """From an apply function: the next batch may start beside this one from now on."""
    release = _LET_NEXT_START.get()
    if release is not None:
        release()


def current_gate() -> Callable[[], None]:
    """What let_next_start() calls here (a no-op outside a batch)."""
    return _LET_NEXT_START.get() or (lambda: None)


def next_start_gate(release: Callable[[], None]) -> contextvars.Token[Callable[[], None] | None]:
    """Route let_next_start() of the code run from here (in this context) to `release`."""
    return _LET_NEXT_START.set(release)
