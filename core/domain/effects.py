"""What a recorded transfer's balance effects must be, derived with today's rules.

The ledger audit's re-derivation (ledger/rederive.py) asks, for each transfer record
(its movement, protocol, status), which sets of postings today's planner could have made
for it, and compares them with the events the ledger holds for that transaction. The rules
are the planners' own: the one-shard and 2PC batch planner's postings (batch_plan.py) and
the TC/C and Saga branch table (branch_plan.BUSINESS), walked along every path a transfer
with that outcome can have taken.
"""

from __future__ import annotations

from collections import Counter
from typing import NamedTuple

from core.domain import branch_plan
from core.domain.accounts import Account
from core.domain.batch_plan import plan_local_batch
from core.domain.transfers import Transfer


class Posting(NamedTuple):
    account_id: str
    kind: str
    amount: int
    reserved_delta: int


Effects = Counter[Posting]  # a multiset: the same posting may occur twice

# The branch operations of a finished TC/C or Saga transfer, per outcome: every path its
# steps can have taken (a Try refused, a branch cancelled after a hold, ...).
BRANCH_PATHS: dict[tuple[str, str], list[list[tuple[str, str]]]] = {
    ("tcc", "success"): [[("debit", "try"), ("credit", "try"), ("debit", "confirm"), ("credit", "confirm")]],
    ("tcc", "failed"): [
        [],
        [("debit", "try"), ("debit", "cancel")],
        [("debit", "try"), ("credit", "try"), ("debit", "cancel"), ("credit", "cancel")],
    ],
    ("saga", "success"): [[("debit", "try"), ("credit", "try"), ("debit", "confirm")]],
    ("saga", "failed"): [
        [],
        [("debit", "try"), ("debit", "cancel")],
        [("debit", "try"), ("credit", "try"), ("debit", "cancel"), ("credit", "cancel")],
    ],
}


def _batch_planner_effects(transfer: Transfer) -> Effects:
    """The one-shard / 2PC planner's postings for an applied transfer (accounts with room)."""
    accounts = {
        account_id: Account(account_id, "rederive", transfer.currency, transfer.amount, 0, "active", 0)
        for account_id in (transfer.from_account, transfer.to_account)
        if account_id is not None
    }
    plan = plan_local_batch([transfer], accounts, {})
    return Counter(
        Posting(e.account_id, e.kind, e.amount, e.reserved_delta) for e in plan.postings.events_on(set(accounts))
    )


def _branch_effects(transfer: Transfer, mode: str, path: list[tuple[str, str]]) -> Effects:
    effects: Effects = Counter()
    for branch, operation in path:
        _, posting = branch_plan.BUSINESS[(mode, branch, operation)]
        if posting is None:
            continue
        kind, balance_sign, reserved_sign = posting
        account_id = transfer.from_account if branch == "debit" else transfer.to_account
        assert account_id is not None, "a branch transfer has both accounts"
        effects[Posting(account_id, kind, balance_sign * transfer.amount, reserved_sign * transfer.amount)] += 1
    return effects


def possible_effects(transfer: Transfer, protocol: str, status: str) -> list[Effects]:
    """Every set of postings today's rules allow for a transfer recorded with this outcome."""
    if protocol in ("tcc", "saga"):
        return [_branch_effects(transfer, protocol, path) for path in BRANCH_PATHS[(protocol, status)]]
    if status == "success":
        return [_batch_planner_effects(transfer)]
    return [Counter()]  # refused: the batch planner posts nothing
