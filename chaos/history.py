"""What the client saw: every transfer it tried and every answer it got, with times.

The checker judges the system against this history and the databases alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# A definite answer: the service committed to an outcome. Anything else (503, 500, a
# timeout, a reset connection) is unknown: the transfer may or may not have happened.
SUCCESS = "success"
FAILED = "failed"
UNKNOWN = "unknown"


@dataclass(frozen=True)
class Answer:
    outcome: str  # success | failed | unknown
    code: str | None  # the error code of a failure or an unknown (shard_unavailable, timeout, ...)
    at_s: float  # seconds since the run started, when the answer arrived

    def __post_init__(self) -> None:
        assert self.outcome in (SUCCESS, FAILED, UNKNOWN), f"unknown outcome {self.outcome!r}"

    @property
    def definite(self) -> bool:
        return self.outcome != UNKNOWN


@dataclass
class TransferRecord:
    transaction_id: str
    from_account: str
    to_account: str
    amount: int  # minor units
    mode: str  # 2pc | tcc | saga | local (local: both accounts on one shard)
    sent_at_s: float
    answers: list[Answer] = field(default_factory=list)

    @property
    def final(self) -> Answer | None:
        """The last definite answer, if any."""
        return next((a for a in reversed(self.answers) if a.definite), None)

    @property
    def timed_out(self) -> bool:
        """The client did not learn the outcome at once (it had to retry)."""
        return any(not a.definite for a in self.answers)

    def request_body(self, currency: str) -> dict[str, str]:
        body = {
            "from_account": self.from_account,
            "to_account": self.to_account,
            "amount": format_minor(self.amount),
            "currency": currency,
            "transaction_id": self.transaction_id,
        }
        if self.mode != "local":
            body["mode"] = self.mode
        return body


@dataclass(frozen=True)
class Read:
    """One periodic read: per shard, every run account's state in one statement (so
    consistent per shard, but not across shards)."""

    at_s: float
    accounts: dict[str, tuple[int, int, int]]  # account -> (balance, reserved, version)


def format_minor(amount: int) -> str:
    """Minor units of a two-decimal currency (the run uses USD) as a decimal string."""
    assert isinstance(amount, int) and amount > 0, "amounts are positive integer minor units"
    return f"{amount // 100}.{amount % 100:02d}"
