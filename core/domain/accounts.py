"""Accounts as the coordinator sees them: balance and reserved in integer minor units.

A tuple, in the column order of shards/accounts.py's ACCOUNT_COLUMNS, so a locked row
becomes one without a name looked up (a batch locks a thousand or two)."""

from __future__ import annotations

from typing import Literal, NamedTuple, get_args

AccountStatus = Literal["active", "frozen"]
ACCOUNT_STATUSES: tuple[AccountStatus, ...] = get_args(AccountStatus)


class Account(NamedTuple):
    account_id: str
    owner: str
    currency: str
    balance: int  # minor units; includes reserved
    reserved: int  # held by unfinished transfers; not spendable (0 <= reserved <= balance)
    status: AccountStatus
    version: int

    @property
    def available(self) -> int:
        return self.balance - self.reserved
