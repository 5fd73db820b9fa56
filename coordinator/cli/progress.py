"""Progress of long ledger work: a rich progress bar (count, events/s, time left) on a
terminal; a plain line every few seconds otherwise (logs, CI)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TextColumn, TimeRemainingColumn
from rich.text import Text

PLAIN_EVERY_S = 5.0

Advance = Callable[[int], None]


class RateColumn(ProgressColumn):
    def __init__(self, unit: str) -> None:
        super().__init__()
        self.unit = unit

    def render(self, task: Task) -> Text:
        return Text(f"{task.speed or 0:,.0f} {self.unit}/s")


@contextmanager
def progress(description: str, total: int | None, unit: str = "events") -> Iterator[Advance]:
    """Yields `advance(n)`: n more done. `total` None: a count without an end."""
    if sys.stderr.isatty():
        bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            RateColumn(unit),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=False,
        )
        with bar:
            task = bar.add_task(description, total=total)
            yield lambda count: bar.advance(task, count)
        return
    started = last = time.monotonic()
    done = 0

    def advance(count: int) -> None:
        nonlocal done, last
        done += count
        now = time.monotonic()
        if now - last >= PLAIN_EVERY_S:
            last = now
            rate = done / max(now - started, 1e-9)
            left = f", {(total - done) / rate:.0f} s left" if total and rate else ""
            of = f"/{total:,}" if total else ""
            print(f"{description}: {done:,}{of} {unit} ({rate:,.0f} {unit}/s{left})", file=sys.stderr, flush=True)

    yield advance
    elapsed = time.monotonic() - started
    print(
        f"{description}: {done:,} {unit} in {elapsed:.1f} s ({done / max(elapsed, 1e-9):,.0f} {unit}/s)",
        file=sys.stderr,
        flush=True,
    )
