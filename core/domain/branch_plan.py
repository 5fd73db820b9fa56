"""TC/C and Saga branch operations, decided as a pure function over locked rows.

A branch operation is (transfer, branch, operation): branch `debit` runs on the
sender's shard, `credit` on the receiver's; operation `try`, `confirm` or `cancel`.
The barrier rows of the transfer (read in the same local transaction) make each one
safe against repeats and reordering:

- a repeated operation does nothing and reports `repeat`;
- a Cancel whose Try never ran records a try-marker with origin 'cancel' and does
  nothing else (null compensation);
- a Try that finds such a marker is refused (no hanging hold);
- a refused Try closes its branch the same way, so a duplicate delivered later
  cannot succeed after the transfer was cancelled or compensated.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, NamedTuple

from core.domain.accounts import Account
from core.domain.errors import RecordedCode
from core.domain.postings import Postings
from core.domain.transfers import Transfer

# (mode, branch, operation) -> (what to check, posting as (kind, balance sign, reserved sign)).
# Only debit-first Try exists: the receiver is never credited before the sender is held
# (TC/C) or debited (Saga).
BUSINESS: dict[tuple[str, str, str], tuple[str | None, tuple[str, int, int] | None]] = {
    ("tcc", "debit", "try"): ("sender", ("hold", 0, +1)),
    ("tcc", "credit", "try"): ("receiver", None),
    ("tcc", "debit", "confirm"): (None, ("debit", -1, -1)),
    ("tcc", "credit", "confirm"): (None, ("credit", +1, 0)),
    ("tcc", "debit", "cancel"): (None, ("release", 0, -1)),
    ("tcc", "credit", "cancel"): (None, None),
    ("saga", "debit", "try"): ("sender", ("debit", -1, 0)),
    ("saga", "credit", "try"): ("receiver", ("credit", +1, 0)),
    ("saga", "debit", "confirm"): (None, None),
    ("saga", "debit", "cancel"): (None, ("compensate", +1, 0)),
    ("saga", "credit", "cancel"): (None, None),
}


Branch = Literal["debit", "credit"]  # the sender's side, the receiver's side
Operation = Literal["try", "confirm", "cancel"]
SecondPhase = Literal["confirm", "cancel"]  # what the decision chose
Note = Literal["applied", "repeat", "null_compensation", "late_try_refused", "refused", "nothing_to_undo"]


class BranchOp(NamedTuple):
    """One branch operation of one transfer. A tuple (four per TC/C transfer); which
    (mode, branch, operation) exist is BUSINESS, checked where a plan looks it up."""

    transfer: Transfer
    branch: Branch
    operation: Operation

    @property
    def account_id(self) -> str:
        account = self.transfer.from_account if self.branch == "debit" else self.transfer.to_account
        assert account is not None
        return account


@dataclass(frozen=True)
class BranchOutcome:
    ok: bool
    note: Note
    error_code: RecordedCode | None = None

    @property
    def out_of_order(self) -> bool:
        return self.note in ("null_compensation", "late_try_refused")


# The outcomes that carry no error code, shared (they are frozen): one per branch op otherwise.
APPLIED = BranchOutcome(True, "applied")
REPEAT = BranchOutcome(True, "repeat")
LATE_TRY_REFUSED = BranchOutcome(False, "late_try_refused", "transfer_aborted")
NULL_COMPENSATION = BranchOutcome(True, "null_compensation")
NOTHING_TO_UNDO = BranchOutcome(True, "nothing_to_undo")


@dataclass
class BranchPlan:
    postings: Postings
    outcomes: list[BranchOutcome] = field(default_factory=list)
    barrier_inserts: list[tuple[str, str, str, str]] = field(default_factory=list)  # (tid, branch, op, origin)


def plan_branch_batch(
    ops: list[BranchOp],
    accounts: dict[str, Account],
    barrier: dict[tuple[str, str, str], str],
) -> BranchPlan:
    """`barrier`: (transaction_id, branch, operation) -> origin, as stored on this shard."""
    plan = BranchPlan(Postings(accounts))
    rows = dict(barrier)

    def insert(op: BranchOp, operation: str, origin: str) -> None:
        key = (op.transfer.transaction_id, op.branch, operation)
        assert key not in rows, f"barrier row {key} written twice"
        rows[key] = origin
        plan.barrier_inserts.append((*key, origin))

    for op in ops:
        transfer = op.transfer
        rule = BUSINESS.get((transfer.mode, op.branch, op.operation))
        assert rule is not None, f"no branch operation {transfer.mode}/{op.branch}/{op.operation}"
        check, posting = rule
        tried = rows.get((transfer.transaction_id, op.branch, "try"))
        if op.operation == "try":
            if tried == "try":
                outcome = REPEAT
            elif tried == "cancel":
                outcome = LATE_TRY_REFUSED
            else:
                code = _check(check, op, accounts, plan.postings)
                if code is None:
                    insert(op, "try", "try")
                    _post(plan.postings, op, posting)
                    outcome = APPLIED
                else:
                    insert(op, "try", "cancel")  # closes the branch
                    outcome = BranchOutcome(False, "refused", code)
        elif op.operation == "confirm":
            assert (transfer.transaction_id, op.branch, "cancel") not in rows, (
                f"confirm after cancel of {transfer.transaction_id}"
            )
            if (transfer.transaction_id, op.branch, "confirm") in rows:
                outcome = REPEAT
            else:
                assert tried == "try", f"confirm of {transfer.transaction_id}/{op.branch} without a successful try"
                insert(op, "confirm", "confirm")
                _post(plan.postings, op, posting)
                outcome = APPLIED
        else:
            assert (transfer.transaction_id, op.branch, "confirm") not in rows, (
                f"cancel after confirm of {transfer.transaction_id}"
            )
            if (transfer.transaction_id, op.branch, "cancel") in rows:
                outcome = REPEAT
            else:
                insert(op, "cancel", "cancel")
                if tried is None:
                    insert(op, "try", "cancel")
                    outcome = NULL_COMPENSATION
                elif tried == "try":
                    _post(plan.postings, op, posting)
                    outcome = APPLIED
                else:
                    outcome = NOTHING_TO_UNDO
        plan.outcomes.append(outcome)
    assert len(plan.outcomes) == len(ops)
    return plan


def _check(check: str | None, op: BranchOp, accounts: dict[str, Account], postings: Postings) -> RecordedCode | None:
    if check is None:
        return None
    transfer = op.transfer
    account = accounts.get(op.account_id)
    if account is None:
        return "account_not_found"
    if account.currency != transfer.currency:
        return "currency_mismatch"
    if account.status != "active":
        return "account_frozen"
    if check == "sender" and postings.available(account.account_id) < transfer.amount:
        return "insufficient_funds"
    return None


def _post(postings: Postings, op: BranchOp, posting: tuple[str, int, int] | None) -> None:
    if posting is None:
        return
    kind, balance_sign, reserved_sign = posting
    amount = op.transfer.amount
    postings.post(op.transfer.transaction_id, op.account_id, kind, balance_sign * amount, reserved_sign * amount)
