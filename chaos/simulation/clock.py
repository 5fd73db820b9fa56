"""Virtual time: an asyncio event loop whose clock moves only when every task waits.

The loop runs the real coordinator code (its sleeps, timeouts and retries' backoffs) with no
I/O: when nothing is ready, the selector jumps the clock to the next timer instead of
sleeping, so a minute of simulated time costs what its steps cost. With the ready queue in
FIFO order and nothing read from outside, a run is a function of its seed.
"""

from __future__ import annotations

import asyncio
import selectors
from typing import Any


class Stalled(Exception):
    """Every task waits for something no timer or task will ever give: the world is stuck."""


class VirtualSelector(selectors.DefaultSelector):
    """Registers like the real one (the loop's own wake-up pipe), never waits on it."""

    def __init__(self) -> None:
        super().__init__()
        self.now_s = 0.0

    def select(self, timeout: float | None = None) -> list[tuple[Any, int]]:
        if timeout is None:
            raise Stalled("no task is ready and no timer is set")
        if timeout > 0:
            self.now_s += timeout
        return []


class VirtualLoop(asyncio.SelectorEventLoop):
    def __init__(self) -> None:
        self.clock = VirtualSelector()
        super().__init__(self.clock)

    def time(self) -> float:
        return self.clock.now_s
