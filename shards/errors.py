"""Shard-layer errors. Driver exceptions are translated here, at the boundary."""


class ShardError(Exception):
    def __init__(self, shard: str, message: str) -> None:
        super().__init__(f"shard {shard}: {message}")
        self.shard = shard


class ShardUnavailable(ShardError):
    """The shard could not be reached or dropped the connection. The outcome of a
    write in flight is unknown until its record is read back."""


class ShardRetryable(ShardError):
    """A conflict that is safe to retry from scratch: the transaction was rolled back
    (serialization failure, deadlock, lock timeout, a racing idempotency insert)."""


class AccountsMoved(Exception):
    """The shard no longer serves (or does not yet serve) these accounts: a slot migration
    moved them, or the caller routed with an old topology. Nothing was written; route
    again with the current topology."""

    def __init__(self, account_ids: list[str]) -> None:
        super().__init__(f"accounts not served by this shard (moved or moving): {', '.join(account_ids[:5])}")
        self.account_ids = account_ids
