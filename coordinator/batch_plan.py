"""Group commit's decision step, as a pure function.

The shard layer locks every account a batch touches (in account-id order), hands
their rows here, and applies what comes back: one folded delta per account, one
record per transfer. Transfers are decided in arrival order, each against the
balances its predecessors left, so one insufficient-funds transfer fails alone.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from uuid import UUID

from coordinator.domain import Account, Transfer, TransferResult


@dataclass(frozen=True)
class StoredTransfer:
    """A transaction id already recorded on the shard."""

    request_hash: bytes
    result: TransferResult


@dataclass
class BatchPlan:
    # One entry per input transfer, in input order.
    results: list[TransferResult | None] = field(default_factory=list)
    # Per input transfer: "new" (record it), "replay" (already recorded), "conflict".
    dispositions: list[str] = field(default_factory=list)
    # account_id -> (balance delta, version increments). Folded: one row update per account.
    deltas: dict[str, tuple[int, int]] = field(default_factory=dict)

    @property
    def new_results(self) -> list[TransferResult]:
        return [r for r, d in zip(self.results, self.dispositions) if d == "new" and r is not None]


def plan_local_batch(
    transfers: list[Transfer],
    accounts: dict[str, Account],
    stored: dict[UUID, StoredTransfer],
    protocol: str = "local",
) -> BatchPlan:
    plan = BatchPlan()
    balances = {account_id: account.balance for account_id, account in accounts.items()}
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

        error_code = _refusal(transfer, accounts, balances)
        if error_code is None:
            if transfer.from_account is not None:
                _post(plan, balances, transfer.from_account, -transfer.amount)
            _post(plan, balances, transfer.to_account, transfer.amount)
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

    for account_id, balance in balances.items():
        assert balance >= accounts[account_id].reserved, f"plan overdraws {account_id}"
    assert len(plan.results) == len(transfers)
    return plan


def _refusal(transfer: Transfer, accounts: dict[str, Account], balances: dict[str, int]) -> str | None:
    """The business reason this transfer cannot happen now, or None."""
    receiver = accounts.get(transfer.to_account)
    sender = accounts.get(transfer.from_account) if transfer.from_account is not None else None
    if receiver is None or (transfer.from_account is not None and sender is None):
        return "account_not_found"
    if receiver.currency != transfer.currency or (sender is not None and sender.currency != transfer.currency):
        return "currency_mismatch"
    if receiver.status != "active" or (sender is not None and sender.status != "active"):
        return "account_frozen"
    if sender is not None and balances[sender.account_id] - sender.reserved < transfer.amount:
        return "insufficient_funds"
    return None


def _post(plan: BatchPlan, balances: dict[str, int], account_id: str, delta: int) -> None:
    balances[account_id] += delta
    total, versions = plan.deltas.get(account_id, (0, 0))
    plan.deltas[account_id] = (total + delta, versions + 1)
