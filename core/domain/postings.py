"""Postings: the balance changes a batch makes to locked accounts, as events and folded changes.

A pure, in-memory book over the rows a batch locked. Each posting gets the account's
next version and the balance after it, which is what the outbox (and so the ledger)
records; the changes fold into one row update per account for the database.
"""

from __future__ import annotations

from typing import NamedTuple

from core.domain.accounts import Account

EVENT_KINDS = frozenset({"deposit", "debit", "credit", "hold", "release", "compensate"})


class BalanceEvent(NamedTuple):
    """One posting, as the outbox (and so the ledger) records it. A tuple: a batch of a
    thousand transfers makes two thousand of these, and Postings.post checks each."""

    transaction_id: str
    account_id: str
    version: int
    kind: str
    amount: int  # signed change of balance
    reserved_delta: int  # signed change of reserved (holds)
    balance_after: int
    reserved_after: int
    currency: str


class AccountChange(NamedTuple):
    """One account's folded change in a batch: what its one row update applies."""

    balance_delta: int
    reserved_delta: int
    versions: int


class Postings:
    def __init__(self, accounts: dict[str, Account]) -> None:
        self.accounts = accounts
        self.balance = {account_id: a.balance for account_id, a in accounts.items()}
        self.reserved = {account_id: a.reserved for account_id, a in accounts.items()}
        self.version = {account_id: a.version for account_id, a in accounts.items()}
        self.events: list[BalanceEvent] = []
        self._changes: dict[str, AccountChange] | None = {}

    def available(self, account_id: str) -> int:
        return self.balance[account_id] - self.reserved[account_id]

    def post(self, transaction_id: str, account_id: str, kind: str, amount: int, reserved_delta: int = 0) -> None:
        assert kind in EVENT_KINDS, f"unknown event kind {kind!r}"
        balance = self.balance[account_id] + amount
        reserved = self.reserved[account_id] + reserved_delta
        assert 0 <= reserved <= balance, f"posting {kind} {amount} would break {account_id}'s balance"
        self.balance[account_id], self.reserved[account_id] = balance, reserved
        version = self.version[account_id] = self.version[account_id] + 1
        self._changes = None
        self.events.append(
            BalanceEvent(
                transaction_id,
                account_id,
                version,
                kind,
                amount,
                reserved_delta,
                balance,
                reserved,
                self.accounts[account_id].currency,
            )
        )

    @property
    def changes(self) -> dict[str, AccountChange]:
        """Per account posted to: the folded change (what the row update applies), made from
        the books' end state, not kept up per posting."""
        if self._changes is None:
            balance, reserved, version = self.balance, self.reserved, self.version
            self._changes = {
                account_id: AccountChange(
                    balance[account_id] - row.balance,
                    reserved[account_id] - row.reserved,
                    version[account_id] - row.version,
                )
                for account_id, row in self.accounts.items()
                if version[account_id] != row.version
            }
        return self._changes

    def changes_on(self, account_ids: set[str]) -> dict[str, AccountChange]:
        return {account_id: c for account_id, c in self.changes.items() if account_id in account_ids}

    def events_on(self, account_ids: set[str]) -> list[BalanceEvent]:
        return [event for event in self.events if event.account_id in account_ids]
