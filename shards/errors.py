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
