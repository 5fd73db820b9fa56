"""The barrier rules of TC/C and Saga branch operations, table by table, with no database:
plan_branch_batch over in-memory rows. Every case of the barrier: a first operation, a
repeat, a null compensation, a late Try after it, a refused Try closing its branch, and
operations delivered out of order within one batch."""

from __future__ import annotations

from uuid import uuid4

import pytest

from core.domain.accounts import Account, AccountStatus
from core.domain.branch_plan import Branch, BranchOp, Operation, plan_branch_batch
from core.domain.transfers import Mode, Transfer

AMOUNT = 300


def transfer(mode: Mode, transaction_id: str | None = None, amount: int = AMOUNT) -> Transfer:
    return Transfer(transaction_id or str(uuid4()), "transfer", "alice", "bob", amount, "USD", mode)


def accounts(
    alice: int = 1000, alice_reserved: int = 0, bob_status: AccountStatus = "active", bob_currency: str = "USD"
) -> dict[str, Account]:
    return {
        "alice": Account("alice", "a", "USD", alice, alice_reserved, "active", 1),
        "bob": Account("bob", "b", bob_currency, 0, 0, bob_status, 1),
    }


# (mode, branch, operation, barrier rows before as {operation: origin}, expected note, code,
#  barrier rows written as [(operation, origin)], (balance change, reserved change) of the account)
CASES = [
    # First operations: the rule's posting, a barrier row.
    ("tcc", "debit", "try", {}, "applied", None, [("try", "try")], (0, +AMOUNT)),
    ("saga", "debit", "try", {}, "applied", None, [("try", "try")], (-AMOUNT, 0)),
    ("tcc", "credit", "try", {}, "applied", None, [("try", "try")], (0, 0)),
    ("saga", "credit", "try", {}, "applied", None, [("try", "try")], (+AMOUNT, 0)),
    ("tcc", "debit", "confirm", {"try": "try"}, "applied", None, [("confirm", "confirm")], (-AMOUNT, -AMOUNT)),
    ("tcc", "credit", "confirm", {"try": "try"}, "applied", None, [("confirm", "confirm")], (+AMOUNT, 0)),
    ("saga", "debit", "confirm", {"try": "try"}, "applied", None, [("confirm", "confirm")], (0, 0)),
    ("tcc", "debit", "cancel", {"try": "try"}, "applied", None, [("cancel", "cancel")], (0, -AMOUNT)),
    ("saga", "debit", "cancel", {"try": "try"}, "applied", None, [("cancel", "cancel")], (+AMOUNT, 0)),
    ("tcc", "credit", "cancel", {"try": "try"}, "applied", None, [("cancel", "cancel")], (0, 0)),
    ("saga", "credit", "cancel", {"try": "try"}, "applied", None, [("cancel", "cancel")], (0, 0)),
    # Repeats change nothing and write nothing.
    ("tcc", "debit", "try", {"try": "try"}, "repeat", None, [], (0, 0)),
    ("saga", "credit", "try", {"try": "try"}, "repeat", None, [], (0, 0)),
    ("tcc", "debit", "confirm", {"try": "try", "confirm": "confirm"}, "repeat", None, [], (0, 0)),
    ("tcc", "debit", "cancel", {"try": "try", "cancel": "cancel"}, "repeat", None, [], (0, 0)),
    ("saga", "debit", "cancel", {"try": "cancel", "cancel": "cancel"}, "repeat", None, [], (0, 0)),
    # A Cancel whose Try never ran: null compensation, and a try-marker of origin cancel.
    ("tcc", "debit", "cancel", {}, "null_compensation", None, [("cancel", "cancel"), ("try", "cancel")], (0, 0)),
    ("tcc", "credit", "cancel", {}, "null_compensation", None, [("cancel", "cancel"), ("try", "cancel")], (0, 0)),
    ("saga", "debit", "cancel", {}, "null_compensation", None, [("cancel", "cancel"), ("try", "cancel")], (0, 0)),
    # The late Try that finds that marker is refused: no hanging hold, no late credit.
    ("tcc", "debit", "try", {"try": "cancel", "cancel": "cancel"}, "late_try_refused", "transfer_aborted", [], (0, 0)),
    (
        "saga",
        "credit",
        "try",
        {"try": "cancel", "cancel": "cancel"},
        "late_try_refused",
        "transfer_aborted",
        [],
        (0, 0),
    ),
    ("tcc", "credit", "try", {"try": "cancel"}, "late_try_refused", "transfer_aborted", [], (0, 0)),
    # A Cancel after a refused Try: nothing to undo, but the branch is closed.
    ("tcc", "debit", "cancel", {"try": "cancel"}, "nothing_to_undo", None, [("cancel", "cancel")], (0, 0)),
    ("saga", "credit", "cancel", {"try": "cancel"}, "nothing_to_undo", None, [("cancel", "cancel")], (0, 0)),
]


@pytest.mark.parametrize(("mode", "branch", "operation", "before", "note", "code", "written", "change"), CASES)
def test_barrier_rule(
    mode: Mode,
    branch: Branch,
    operation: Operation,
    before: dict[str, str],
    note: str,
    code: str | None,
    written: list[tuple[str, str]],
    change: tuple[int, int],
) -> None:
    """Protects each (mode, branch, operation) against every barrier state it can meet."""
    moved = transfer(mode)
    barrier: dict[tuple[str, str, str], str] = {
        (moved.transaction_id, branch, op): origin for op, origin in before.items()
    }
    rows = accounts(alice_reserved=AMOUNT)  # a hold of this amount exists (what a successful TC/C Try left)
    plan = plan_branch_batch([BranchOp(moved, branch, operation)], rows, barrier)
    (outcome,) = plan.outcomes
    assert (outcome.note, outcome.error_code) == (note, code)
    assert outcome.ok == (code is None)
    assert outcome.out_of_order == (note in ("null_compensation", "late_try_refused"))
    assert plan.barrier_inserts == [(moved.transaction_id, branch, op, origin) for op, origin in written]
    account = "alice" if branch == "debit" else "bob"
    found = plan.postings.changes.get(account)
    assert ((found.balance_delta, found.reserved_delta) if found else (0, 0)) == change
    assert not (set(plan.postings.changes) - {account}), "a branch posts to its own account only"


# A Try the checks refuse closes its branch (origin cancel), so a duplicate delivered later
# cannot succeed after the transfer was cancelled or compensated.
REFUSALS = [
    ("tcc", "debit", accounts(alice=100), "insufficient_funds"),
    ("saga", "debit", accounts(alice=AMOUNT - 1), "insufficient_funds"),
    ("tcc", "debit", accounts(alice=1000, alice_reserved=800), "insufficient_funds"),  # held funds are not available
    ("tcc", "credit", accounts(bob_status="frozen"), "account_frozen"),
    ("saga", "credit", accounts(bob_currency="EUR"), "currency_mismatch"),
    ("saga", "credit", {"alice": accounts()["alice"]}, "account_not_found"),
]


@pytest.mark.parametrize(("mode", "branch", "rows", "code"), REFUSALS)
def test_refused_try_closes_its_branch(mode: Mode, branch: Branch, rows: dict[str, Account], code: str) -> None:
    moved = transfer(mode)
    plan = plan_branch_batch([BranchOp(moved, branch, "try")], rows, {})
    (outcome,) = plan.outcomes
    assert (outcome.ok, outcome.note, outcome.error_code) == (False, "refused", code)
    assert plan.barrier_inserts == [(moved.transaction_id, branch, "try", "cancel")]
    assert not plan.postings.changes and not plan.postings.events
    again = plan_branch_batch(
        [BranchOp(moved, branch, "try")], accounts(), {(moved.transaction_id, branch, "try"): "cancel"}
    )
    assert again.outcomes[0].note == "late_try_refused", "the duplicate Try, delivered later, is refused"


@pytest.mark.parametrize(
    ("operations", "notes", "change"),
    [
        # In order within one batch: Try, then its Cancel releases the hold.
        (["try", "cancel"], ["applied", "applied"], (0, 0)),
        # Try, Confirm: the hold becomes the debit.
        (["try", "confirm"], ["applied", "applied"], (-AMOUNT, 0)),
        # Reordered: the Cancel arrives first (null compensation), the Try after it is refused.
        (["cancel", "try"], ["null_compensation", "late_try_refused"], (0, 0)),
        # Every operation twice: the second of each is a repeat.
        (["try", "try", "cancel", "cancel"], ["applied", "repeat", "applied", "repeat"], (0, 0)),
    ],
)
def test_operations_of_one_transfer_in_one_batch(
    operations: list[Operation], notes: list[str], change: tuple[int, int]
) -> None:
    """Protects the barrier inside a batch: each operation sees the rows the ones before it wrote."""
    moved = transfer("tcc")
    plan = plan_branch_batch([BranchOp(moved, "debit", op) for op in operations], accounts(), {})
    assert [outcome.note for outcome in plan.outcomes] == notes
    found = plan.postings.changes.get("alice")
    assert ((found.balance_delta, found.reserved_delta) if found else (0, 0)) == change
    assert len(plan.barrier_inserts) == len({(row[2]) for row in plan.barrier_inserts}), "no barrier row twice"


def test_holds_of_one_batch_share_the_sender_s_available_funds() -> None:
    """Two Trys on one sender in one batch: the second sees the first's hold."""
    first, second = transfer("tcc", amount=600), transfer("tcc", amount=600)
    plan = plan_branch_batch([BranchOp(first, "debit", "try"), BranchOp(second, "debit", "try")], accounts(), {})
    assert [(o.note, o.error_code) for o in plan.outcomes] == [("applied", None), ("refused", "insufficient_funds")]
    assert plan.postings.changes["alice"].reserved_delta == 600


@pytest.mark.parametrize(
    ("before", "operation"),
    [
        ({"try": "try", "cancel": "cancel"}, "confirm"),  # confirm after cancel
        ({}, "confirm"),  # confirm without a successful try
        ({"try": "cancel"}, "confirm"),
        ({"try": "try", "confirm": "confirm"}, "cancel"),  # cancel after confirm
    ],
)
def test_impossible_orders_are_invariant_failures(before: dict[str, str], operation: Operation) -> None:
    """Confirm and Cancel of one branch exclude each other: the coordinator decides once, under
    the phase-state lock, so meeting both is a bug, not a state to handle."""
    moved = transfer("tcc")
    barrier = {(moved.transaction_id, "debit", op): origin for op, origin in before.items()}
    with pytest.raises(AssertionError):
        plan_branch_batch([BranchOp(moved, "debit", operation)], accounts(alice_reserved=AMOUNT), barrier)


def test_every_rule_of_the_table_is_covered() -> None:
    """The table above meets every (mode, branch, operation) the protocols use."""
    from core.domain.branch_plan import BUSINESS

    covered = {(mode, branch, operation) for mode, branch, operation, *_ in CASES}
    assert set(BUSINESS) <= covered
