"""Group commit's decision step, as a pure function.

The shard layer locks every account a batch touches (in account-id order), hands
their rows here, and applies what comes back: one folded delta per account, one
record per transfer. Transfers are decided in arrival order, each against the
balances its predecessors left, so one insufficient-funds transfer fails alone.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal
from uuid import UUID

from coordinator.domain.accounts import Account
from coordinator.domain.transfers import StoredTransfer, Transfer, TransferResult
from coordinator.domain.postings import Postings


# What the plan does with one transfer: record it, answer with its stored record, or refuse
# it (its id belongs to a different request).
Disposition = Literal["new", "replay", "conflict"]


@dataclass
class BatchPlan:
    postings: Postings
    # One entry per input transfer, in input order.
    results: list[TransferResult | None] = field(default_factory=list)
    dispositions: list[Disposition] = field(default_factory=list)

    @property
    def deltas(self) -> dict[str, tuple[int, int]]:
        """account_id -> (balance delta, versions). Folded: one row update per account."""
        return {a: (c.balance_delta, c.versions) for a, c in self.postings.changes.items()}

    @property
    def new_results(self) -> list[TransferResult]:
        return [r for r, d in zip(self.results, self.dispositions) if d == "new" and r is not None]


def plan_local_batch(
    transfers: list[Transfer],
    accounts: dict[str, Account],
    stored: dict[UUID, StoredTransfer],
    protocol: str = "local",
) -> BatchPlan:
    postings = Postings(accounts)
    plan = BatchPlan(postings)
    seen: dict[UUID, TransferResult] = {}

    for transfer in transfers:
        earlier = stored.get(transfer.transaction_id)
        if earlier is not None:
            if earlier.request_hash == transfer.request_hash:
                plan.results.append(earlier.result)
                plan.dispositions.append("replay")
            else:
                plan.results.append(None)
                plan.dispositions.append("conflict")
            continue
        if transfer.transaction_id in seen:
            first = seen[transfer.transaction_id]
            same = first.transfer.request_hash == transfer.request_hash
            plan.results.append(first if same else None)
            plan.dispositions.append("replay" if same else "conflict")
            continue

        error_code = refusal(transfer, accounts, postings)
        if error_code is None:
            if transfer.from_account is None:
                postings.post(transfer.transaction_id, transfer.to_account, "deposit", transfer.amount)
            else:
                postings.post(transfer.transaction_id, transfer.from_account, "debit", -transfer.amount)
                postings.post(transfer.transaction_id, transfer.to_account, "credit", transfer.amount)
        result = TransferResult(
            transfer=transfer,
            status="success" if error_code is None else "failed",
            error_code=error_code,
            protocol=protocol,
            phase="committed" if error_code is None else "aborted",
        )
        seen[transfer.transaction_id] = result
        plan.results.append(result)
        plan.dispositions.append("new")

    assert len(plan.results) == len(transfers)
    return plan


def refusal(transfer: Transfer, accounts: dict[str, Account], postings: Postings) -> str | None:
    """The business reason this transfer cannot happen now, or None. Needs both accounts'
    rows (a missing one is refused); `postings` gives the sender's current available funds."""
    receiver = accounts.get(transfer.to_account)
    sender = accounts.get(transfer.from_account) if transfer.from_account is not None else None
    if receiver is None or (transfer.from_account is not None and sender is None):
        return "account_not_found"
    if receiver.currency != transfer.currency or (sender is not None and sender.currency != transfer.currency):
        return "currency_mismatch"
    if receiver.status != "active" or (sender is not None and sender.status != "active"):
        return "account_frozen"
    if sender is not None and postings.available(sender.account_id) < transfer.amount:
        return "insufficient_funds"
    return None
