"""A typed client for the wallet API: `WalletClient(base_url, token=...)`, one method per
operation, idempotent retry of unknown outcomes with the same transaction id."""

from wallet_client.client import NO_RETRY, ApiError, Attempt, RetryPolicy, UnknownOutcome, WalletClient
from wallet_client.models import (
    Account,
    BalanceAt,
    BatchResult,
    Event,
    History,
    HistoryItem,
    Pending,
    ProblemType,
    Ready,
    Transfer,
)

__all__ = [
    "NO_RETRY",
    "Account",
    "ApiError",
    "Attempt",
    "BalanceAt",
    "BatchResult",
    "Event",
    "History",
    "HistoryItem",
    "Pending",
    "ProblemType",
    "Ready",
    "RetryPolicy",
    "Transfer",
    "UnknownOutcome",
    "WalletClient",
]
