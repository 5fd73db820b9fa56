"""Accounts as the coordinator sees them: balance and reserved in integer minor units."""
from __future__ import annotations

from dataclasses import dataclass

ACCOUNT_STATUSES = ("active", "frozen")


@dataclass(frozen=True)
class Account:
    account_id: str
    owner: str
    currency: str
    balance: int  # minor units; includes reserved
    reserved: int  # held by unfinished transfers; not spendable
    status: str
    version: int

    def __post_init__(self) -> None:
        assert 0 <= self.reserved <= self.balance, f"account {self.account_id}: 0 <= reserved <= balance broken"
        assert self.status in ACCOUNT_STATUSES, f"unknown account status {self.status!r}"

    @property
    def available(self) -> int:
        return self.balance - self.reserved

