"""Where the coordinator's own ids (a two-phase batch's id) come from: uuid4, from the
operating system's randomness. The simulator (chaos/simulation/) draws them from its seed
instead, so that a run replays bit for bit."""

from __future__ import annotations

import random
from collections.abc import Callable
from uuid import UUID, uuid4

_source: Callable[[], UUID] = uuid4


def new_batch_id() -> str:
    return str(_source())


def draw_from(rng: random.Random | None) -> None:
    """Ids from `rng` from now on (None: from the operating system again)."""
    global _source
    _source = uuid4 if rng is None else lambda: UUID(int=rng.getrandbits(128), version=4)
