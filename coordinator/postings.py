"""Postings: the balance changes a batch makes to locked accounts, as events and folded changes.

A pure, in-memory book over the rows a batch locked. Each posting gets the account's
next version and the balance after it, which is what the outbox (and so the ledger)
records; the changes fold into one row update per account for the database.
"""
from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from coordinator.domain import Account

EVENT_KINDS = ("deposit", "debit", "credit", "hold", "release", "compensate")


@dataclass(frozen=True)
class BalanceEvent:
    transaction_id: UUID
    account_id: str
    version: int
    kind: str
    amount: int  # signed change of balance
    reserved_delta: int  # signed change of reserved (holds)
    balance_after: int
    reserved_after: int
    currency: str

    def __post_init__(self) -> None:
        assert self.kind in EVENT_KINDS, f"unknown event kind {self.kind!r}"
        assert 0 <= self.reserved_after <= self.balance_after, f"event leaves {self.account_id} inconsistent"


@dataclass
class AccountChange:
    balance_delta: int = 0
    reserved_delta: int = 0
    versions: int = 0


class Postings:
    def __init__(self, accounts: dict[str, Account]) -> None:
        self.accounts = accounts
        self.balance = {account_id: a.balance for account_id, a in accounts.items()}
        self.reserved = {account_id: a.reserved for account_id, a in accounts.items()}
        self.version = {account_id: a.version for account_id, a in accounts.items()}
        self.changes: dict[str, AccountChange] = {}
        self.events: list[BalanceEvent] = []

    def available(self, account_id: str) -> int:
        return self.balance[account_id] - self.reserved[account_id]

    def post(self, transaction_id: UUID, account_id: str, kind: str, amount: int, reserved_delta: int = 0) -> None:
        balance = self.balance[account_id] + amount
        reserved = self.reserved[account_id] + reserved_delta
        assert 0 <= reserved <= balance, f"posting {kind} {amount} would break {account_id}'s balance"
        self.balance[account_id], self.reserved[account_id] = balance, reserved
        self.version[account_id] += 1
        change = self.changes.setdefault(account_id, AccountChange())
        change.balance_delta += amount
        change.reserved_delta += reserved_delta
        change.versions += 1
        self.events.append(BalanceEvent(
            transaction_id=transaction_id, account_id=account_id, version=self.version[account_id], kind=kind,
            amount=amount, reserved_delta=reserved_delta, balance_after=balance, reserved_after=reserved,
            currency=self.accounts[account_id].currency,
        ))

    def changes_on(self, account_ids: set[str]) -> dict[str, AccountChange]:
        return {account_id: c for account_id, c in self.changes.items() if account_id in account_ids}

    def events_on(self, account_ids: set[str]) -> list[BalanceEvent]:
        return [event for event in self.events if event.account_id in account_ids]
