"""The bank workload's REST transport: wallet_client (the same client users get), with every
attempt of every transfer told to the run's history, so the checker sees what a client saw.

Headers come from a callback called for every request, so a caller can mint a fresh bearer
token (`Authorization: Bearer ...`) when the API requires one.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from chaos.history import FAILED, SUCCESS, UNKNOWN, Answer, TransferRecord
from wallet_client import ApiError, Attempt, RetryPolicy, UnknownOutcome, WalletClient

REQUEST_TIMEOUT_S = 15.0  # past lock_timeout (5 s) and a paused shard's pool timeout (5 s)
# Definite refusals (404, 409, 422): a "not applied" that every retry repeats.
DEFINITE_FAILURES = frozenset(
    {
        "insufficient_funds",
        "account_not_found",
        "account_frozen",
        "currency_mismatch",
        "transfer_aborted",
        "idempotency_conflict",
        "same_account",
        "invalid_amount",
        "validation_error",
    }
)

Headers = Callable[[], dict[str, str]]


class RestClient:
    def __init__(
        self, urls: list[str], headers: Headers | None = None, seed: int | str = 0, timeout_s: float = REQUEST_TIMEOUT_S
    ) -> None:
        self.client = WalletClient(urls, headers=headers, seed=seed, timeout_s=timeout_s)
        self.started = time.monotonic()

    async def close(self) -> None:
        await self.client.close()

    def now_s(self) -> float:
        return time.monotonic() - self.started

    async def send(self, record: TransferRecord, currency: str, policy: RetryPolicy) -> Answer:
        """Try the transfer (retrying unknown outcomes with its id, as `policy` bounds); every
        attempt's answer joins the record; the last one is returned."""

        def told(attempt: Attempt) -> None:
            record.answers.append(answer_of(attempt, self.now_s()))

        body = record.request_body(currency)
        try:
            await self.client.transfer(
                body["from_account"],
                body["to_account"],
                body["amount"],
                currency,
                record.transaction_id,
                body.get("mode"),
                retry=policy,
                on_attempt=told,
            )
        except (ApiError, UnknownOutcome):
            pass  # each attempt is already in the record
        return record.answers[-1]


def answer_of(attempt: Attempt, at_s: float) -> Answer:
    if attempt.status == 200:
        return Answer(SUCCESS, None, at_s)
    code = attempt.code or (f"http_{attempt.status}" if attempt.status else "no_answer")
    if attempt.status in (404, 409, 422) and code in DEFINITE_FAILURES:
        return Answer(FAILED, code, at_s)
    return Answer(UNKNOWN, code, at_s)  # 503 shard_unavailable, 500, a timeout, a reset connection
