"""What a batch made of one transfer: one small typed union, never a string or an exception.

  TransferResult  recorded: the money moved (success) or a business refusal was recorded
                  (insufficient_funds, ...); a retry with the same id gets it again
  Refused         not recorded, and what the caller is told: the id belongs to another
                  request (idempotency_conflict), or a shard did not answer, so the outcome
                  stays unknown until a retry with the same id (shard_unavailable)
  Reroute         nothing was written: a shard does not serve these accounts (a slot moved);
                  route again with a newer topology

Expected failures travel as these values; an exception out of a batch is a bug or a shutdown.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from core.domain.errors import WalletError
from core.domain.transfers import TransferResult

RefusalCode = Literal["idempotency_conflict", "shard_unavailable"]
REFUSAL_CODES: tuple[RefusalCode, ...] = get_args(RefusalCode)


@dataclass(frozen=True, slots=True)
class Refused:
    code: RefusalCode
    detail: str

    def __post_init__(self) -> None:
        assert self.code in REFUSAL_CODES, f"a refusal is one of {REFUSAL_CODES}, not {self.code!r}"

    def error(self) -> WalletError:
        return WalletError(self.code, self.detail)


@dataclass(frozen=True, slots=True)
class Reroute:
    account_ids: tuple[str, ...]


Outcome = TransferResult | Refused | Reroute


def conflict(transaction_id: str) -> Refused:
    return Refused("idempotency_conflict", f"transaction_id {transaction_id} was already used for a different request")


def unavailable(shard: str) -> Refused:
    return Refused(
        "shard_unavailable",
        f"shard {shard} did not answer; the outcome is unknown until you retry with the same transaction_id",
    )
