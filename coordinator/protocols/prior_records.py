"""What every protocol asks before it writes: which of these transaction ids already have a
record, and where. A record lives on its debit shard, but an id reused with another source
account sits on that account's shard, so the question goes to every shard.

The protocols are handed an object with this shape for each batch. Within a round
(coordinator/service/rounds.py) it answers from the round's one read per shard, made when the
round began; asked again with `fresh` (a retry after a conflict), it reads anew.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Protocol

from core.domain.transfers import TransferResult


class PriorRecords(Protocol):
    async def find(
        self, transaction_ids: list[str], skip: Collection[str] = (), fresh: bool = False
    ) -> dict[str, TransferResult]:
        """The stored records of these ids on every shard but those in `skip`, every shard
        at once. `fresh`: read after this call (a retry must see what a conflict wrote).
        Raises ShardUnavailable when a shard does not answer."""
        ...
