"""The event loop every long-running wallet process runs on: uvloop where it is installed.

asyncpg is built for uvloop; on the batch path the stdlib loop cost about a fifth of the
coordinator's CPU per transfer (docs/figures.md). uvicorn picks uvloop by
itself for `wallet serve`; this is the same choice for the commands that run a service
directly (`wallet bench`, `wallet relay`, the one-shot admin commands).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

Result = TypeVar("Result")


def run(main: Coroutine[Any, Any, Result]) -> Result:
    try:
        import uvloop
    except ImportError:  # not on this platform: the stdlib loop is correct, only slower
        return asyncio.run(main)
    return uvloop.run(main)
