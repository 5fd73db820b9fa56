"""What every protocol asks before it writes: which of these transaction ids already have a
record, and where. A record lives on its debit shard, but an id reused with another source
account sits on that account's shard, so the question goes to every shard.

The protocols are handed an object with this shape; the service's implementation
(coordinator/service/record_lookup.py) folds the questions that arrive together into one
SELECT per shard.
"""
from __future__ import annotations

from typing import Collection, Protocol

from coordinator.domain.transfers import TransferResult


class PriorRecords(Protocol):
    async def find(self, transaction_ids: list[str], skip: Collection[str] = ()) -> dict[str, TransferResult]:
        """The stored records of these ids on every shard but those in `skip`, every shard
        at once. Raises ShardUnavailable when a shard does not answer."""
        ...
