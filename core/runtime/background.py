"""A background task that repeats one action until stopped (recovery, ledger relay)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger("wallet.background")


class Periodic:
    """Runs `action` again at once while it reports more work (returns True), otherwise
    after `interval_s`. An action's failure is logged and never ends the task."""

    def __init__(
        self,
        name: str,
        action: Callable[[], Awaitable[bool]],
        interval_s: float,
        gate: Callable[[], bool] | None = None,
    ) -> None:
        assert interval_s > 0, "interval_s must be positive"
        self.name = name
        # A singleton's gate: the action runs only while it is true (this process leads).
        self.gate = gate
        self.action = action
        self.interval_s = interval_s
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        assert self.task is None, f"{self.name} already started"
        self.task = asyncio.create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
            self.task = None

    async def _run(self) -> None:
        while True:
            if self.gate is not None and not self.gate():
                await asyncio.sleep(self.interval_s)
                continue
            try:
                more = await self.action()
            except Exception:
                log.exception("%s failed; trying again in %.1f s", self.name, self.interval_s)
                more = False
            if not more:
                await asyncio.sleep(self.interval_s)
