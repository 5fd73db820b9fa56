"""Pure tests of group commit's decision step: plan_local_batch over in-memory accounts."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import uuid4

import pytest

from core.domain.accounts import Account, AccountStatus
from core.domain.batch_plan import BatchPlan, plan_local_batch
from core.domain.transfers import ProtocolName, Transfer, TransferResult


def account(
    account_id: str, balance: int, currency: str = "USD", reserved: int = 0, status: AccountStatus = "active"
) -> Account:
    return Account(
        account_id=account_id,
        owner=f"owner of {account_id}",
        currency=currency,
        balance=balance,
        reserved=reserved,
        status=status,
        version=1,
    )


def accounts_of(*rows: Account) -> dict[str, Account]:
    return {row.account_id: row for row in rows}


def transfer(
    from_account: str,
    to_account: str,
    amount: int,
    currency: str = "USD",
    transaction_id: str | None = None,
) -> Transfer:
    return Transfer(
        transaction_id=transaction_id or str(uuid4()),
        kind="transfer",
        from_account=from_account,
        to_account=to_account,
        amount=amount,
        currency=currency,
        mode="2pc",
    )


def deposit(to_account: str, amount: int, currency: str = "USD", transaction_id: str | None = None) -> Transfer:
    return Transfer(
        transaction_id=transaction_id or str(uuid4()),
        kind="deposit",
        from_account=None,
        to_account=to_account,
        amount=amount,
        currency=currency,
        mode="2pc",
    )


@dataclass
class Planned:
    """A plan with the results it answers with (made as the protocols make them, stamped)."""

    plan: BatchPlan
    results: list[TransferResult | None]

    @property
    def dispositions(self) -> list[str]:
        return list(self.plan.dispositions)

    @property
    def deltas(self) -> dict[str, tuple[int, int]]:
        return self.plan.deltas

    @property
    def new_results(self) -> list[TransferResult | None]:
        return [self.results[index] for index in self.plan.new]


STAMP = datetime(2026, 12, 1, tzinfo=UTC)


def plan_of(
    transfers: list[Transfer],
    accounts: dict[str, Account],
    stored: dict[str, TransferResult],
    protocol: ProtocolName = "local",
) -> Planned:
    plan = plan_local_batch(transfers, accounts, stored, protocol=protocol)
    return Planned(plan, plan.results(transfers, STAMP))


def statuses(plan: Planned) -> list[tuple[str, str | None]]:
    return [(r.status, r.error_code) if r is not None else ("none", None) for r in plan.results]


def final_balances(accounts: dict[str, Account], plan: Planned) -> dict[str, int]:
    return {account_id: row.balance + plan.deltas.get(account_id, (0, 0))[0] for account_id, row in accounts.items()}


# --- success and isolation of failures ---------------------------------------


def test_single_transfer_moves_money_and_counts_versions() -> None:
    """Protects the basic plan: one debit, one credit, one version bump each."""
    accounts = accounts_of(account("alice", 1000), account("bob", 0))
    move = transfer("alice", "bob", 300)
    plan = plan_of([move], accounts, {})
    assert plan.dispositions == ["new"]
    (result,) = plan.results
    assert result is not None
    assert result.transfer == move
    assert (result.status, result.error_code, result.phase, result.protocol) == (
        "success",
        None,
        "committed",
        "local",
    )
    assert plan.deltas == {"alice": (-300, 1), "bob": (300, 1)}
    assert plan.new_results == [result]


def test_protocol_is_recorded_on_results() -> None:
    """Protects the protocol label passed by the caller."""
    accounts = accounts_of(account("alice", 1000), account("bob", 0))
    plan = plan_of([transfer("alice", "bob", 1)], accounts, {}, protocol="2pc")
    assert plan.results[0] is not None and plan.results[0].protocol == "2pc"


def test_insufficient_funds_fails_alone() -> None:
    """Protects batch isolation: one overdraft fails while its batch-mates succeed."""
    accounts = accounts_of(account("alice", 1000), account("bob", 50), account("carol", 0))
    batch = [
        transfer("alice", "carol", 100),
        transfer("bob", "carol", 51),  # bob has only 50
        transfer("alice", "bob", 200),
    ]
    plan = plan_of(batch, accounts, {})
    assert statuses(plan) == [("success", None), ("failed", "insufficient_funds"), ("success", None)]
    assert plan.dispositions == ["new", "new", "new"]
    assert plan.results[1] is not None and plan.results[1].phase == "aborted"
    assert plan.deltas == {"alice": (-300, 2), "carol": (100, 1), "bob": (200, 1)}
    # A recorded failure is still a new result to store, so a retry gets the same answer.
    assert len(plan.new_results) == 3


def test_exact_balance_can_be_spent() -> None:
    """Protects the boundary: spending exactly the available balance succeeds."""
    accounts = accounts_of(account("alice", 500), account("bob", 0))
    plan = plan_of([transfer("alice", "bob", 500), transfer("alice", "bob", 1)], accounts, {})
    assert statuses(plan) == [("success", None), ("failed", "insufficient_funds")]
    assert final_balances(accounts, plan) == {"alice": 0, "bob": 500}


def test_failed_transfer_leaves_no_delta() -> None:
    """Protects against failed transfers touching balances or versions."""
    accounts = accounts_of(account("alice", 10), account("bob", 0))
    plan = plan_of([transfer("alice", "bob", 11)], accounts, {})
    assert statuses(plan) == [("failed", "insufficient_funds")]
    assert plan.deltas == {}


def test_empty_batch_is_an_empty_plan() -> None:
    """Protects the degenerate batch."""
    plan = plan_of([], accounts_of(account("alice", 10)), {})
    assert (plan.results, plan.dispositions, plan.deltas, plan.new_results) == ([], [], {}, [])


# --- sequential semantics ----------------------------------------------------


def test_later_transfer_spends_money_credited_earlier_in_the_batch() -> None:
    """Protects arrival-order semantics: each transfer sees balances its predecessors left."""
    accounts = accounts_of(account("alice", 100), account("bob", 0), account("carol", 0))
    batch = [transfer("alice", "bob", 100), transfer("bob", "carol", 100)]
    plan = plan_of(batch, accounts, {})
    assert statuses(plan) == [("success", None), ("success", None)]
    assert final_balances(accounts, plan) == {"alice": 0, "bob": 0, "carol": 100}
    assert plan.deltas["bob"] == (0, 2)


def test_order_matters_spend_before_credit_fails() -> None:
    """Protects arrival order: a spend placed before the credit that funds it fails."""
    accounts = accounts_of(account("alice", 100), account("bob", 0), account("carol", 0))
    batch = [transfer("bob", "carol", 100), transfer("alice", "bob", 100)]
    plan = plan_of(batch, accounts, {})
    assert statuses(plan) == [("failed", "insufficient_funds"), ("success", None)]
    assert final_balances(accounts, plan) == {"alice": 0, "bob": 100, "carol": 0}


def test_deposit_funds_a_later_transfer() -> None:
    """Protects sequential semantics across kinds: a deposit is spendable by a later transfer."""
    accounts = accounts_of(account("alice", 0), account("bob", 0))
    batch = [deposit("alice", 70), transfer("alice", "bob", 70), transfer("alice", "bob", 1)]
    plan = plan_of(batch, accounts, {})
    assert statuses(plan) == [("success", None), ("success", None), ("failed", "insufficient_funds")]
    assert plan.deltas == {"alice": (0, 2), "bob": (70, 1)}


def test_money_is_conserved_between_accounts() -> None:
    """Protects conservation: transfers (no deposits) sum to zero over all deltas."""
    accounts = accounts_of(*(account(f"acct_{index}", 1000) for index in range(5)))
    batch = [
        transfer(f"acct_{index % 5}", f"acct_{(index * 3 + 1) % 5}", 37 * (index + 1))
        for index in range(40)
        if index % 5 != (index * 3 + 1) % 5
    ]
    plan = plan_of(batch, accounts, {})
    assert sum(delta for delta, _ in plan.deltas.values()) == 0
    assert all(balance >= 0 for balance in final_balances(accounts, plan).values())
    successes = sum(1 for r in plan.results if r is not None and r.status == "success")
    assert sum(versions for _, versions in plan.deltas.values()) == 2 * successes


# --- hot account folding -----------------------------------------------------


def test_hot_account_credits_fold_into_one_delta() -> None:
    """Protects group commit's point: many credits to one account become ONE row update."""
    senders = [account(f"sender_{index}", 1000) for index in range(50)]
    accounts = accounts_of(account("hot", 0), *senders)
    batch = [transfer(f"sender_{index}", "hot", index + 1) for index in range(50)]
    plan = plan_of(batch, accounts, {})
    assert all(status == ("success", None) for status in statuses(plan))
    assert list(plan.deltas).count("hot") == 1
    assert plan.deltas["hot"] == (sum(range(1, 51)), 50)
    assert len(plan.deltas) == 51
    for index in range(50):
        assert plan.deltas[f"sender_{index}"] == (-(index + 1), 1)


def test_hot_account_deposits_fold_into_one_delta() -> None:
    """Protects folding for deposits: only the receiver has a delta."""
    accounts = accounts_of(account("hot", 5))
    plan = plan_of([deposit("hot", 10) for _ in range(20)], accounts, {})
    assert plan.deltas == {"hot": (200, 20)}


# --- idempotency: stored transactions ----------------------------------------


def test_stored_transaction_with_same_hash_is_replayed() -> None:
    """Protects idempotency: a retried id returns the stored result and moves no money."""
    accounts = accounts_of(account("alice", 1000), account("bob", 0))
    move = transfer("alice", "bob", 300)
    stored_result = TransferResult(
        transfer=move, status="success", error_code=None, protocol="local", phase="committed"
    )
    stored = {move.transaction_id: stored_result}
    plan = plan_of([move], accounts, stored)
    assert plan.dispositions == ["replay"]
    assert plan.results == [stored_result]
    assert plan.results[0] is stored_result
    assert plan.deltas == {}
    assert plan.new_results == []


def test_stored_failure_is_replayed_even_if_it_would_now_succeed() -> None:
    """Protects recorded failures: a retry gets the same failure, not a fresh attempt."""
    accounts = accounts_of(account("alice", 1000), account("bob", 0))
    move = transfer("alice", "bob", 300)
    stored_result = TransferResult(
        transfer=move, status="failed", error_code="insufficient_funds", protocol="local", phase="aborted"
    )
    stored = {move.transaction_id: stored_result}
    plan = plan_of([move], accounts, stored)
    assert (plan.dispositions, plan.results, plan.deltas) == (["replay"], [stored_result], {})


def test_replay_ignores_mode() -> None:
    """Protects the idempotency key's promise: the money movement, not the protocol used."""
    accounts = accounts_of(account("alice", 1000), account("bob", 0))
    move = transfer("alice", "bob", 300)
    stored_result = TransferResult(
        transfer=move, status="success", error_code=None, protocol="local", phase="committed"
    )
    stored = {move.transaction_id: stored_result}
    retry = Transfer(move.transaction_id, "transfer", "alice", "bob", 300, "USD", "saga")
    plan = plan_of([retry], accounts, stored)
    assert plan.dispositions == ["replay"]


def test_stored_transaction_with_different_hash_is_a_conflict() -> None:
    """Protects idempotency: reusing an id for a different movement is a conflict, not a transfer."""
    accounts = accounts_of(account("alice", 1000), account("bob", 0))
    original = transfer("alice", "bob", 300)
    stored_result = TransferResult(
        transfer=original, status="success", error_code=None, protocol="local", phase="committed"
    )
    stored = {original.transaction_id: stored_result}
    changed = transfer("alice", "bob", 301, transaction_id=original.transaction_id)
    other = transfer("alice", "bob", 5)
    plan = plan_of([changed, other], accounts, stored)
    assert plan.dispositions == ["conflict", "new"]
    assert plan.results[0] is None
    assert plan.deltas == {"alice": (-5, 1), "bob": (5, 1)}
    assert [r.transfer for r in plan.new_results if r is not None] == [other]


# --- idempotency: duplicates inside one batch --------------------------------


def test_same_id_twice_in_batch_with_same_body_replays_the_first() -> None:
    """Protects against double-spending when a client retries inside one batch window."""
    accounts = accounts_of(account("alice", 1000), account("bob", 0))
    move = transfer("alice", "bob", 300)
    plan = plan_of([move, move], accounts, {})
    assert plan.dispositions == ["new", "replay"]
    assert plan.results[1] is plan.results[0]
    assert plan.deltas == {"alice": (-300, 1), "bob": (300, 1)}
    assert len(plan.new_results) == 1


def test_same_id_twice_in_batch_replays_a_first_failure() -> None:
    """Protects in-batch replay of a failed first attempt: the retry gets the same failure."""
    accounts = accounts_of(account("alice", 100), account("bob", 0))
    move = transfer("alice", "bob", 300)
    plan = plan_of([move, deposit("alice", 500), move], accounts, {})
    assert plan.dispositions == ["new", "new", "replay"]
    assert statuses(plan) == [("failed", "insufficient_funds"), ("success", None), ("failed", "insufficient_funds")]
    assert plan.results[2] is plan.results[0]
    assert plan.deltas == {"alice": (500, 1)}


def test_same_id_twice_in_batch_with_different_body_is_a_conflict() -> None:
    """Protects against an id reused inside one batch for a different movement."""
    accounts = accounts_of(account("alice", 1000), account("bob", 0))
    first = transfer("alice", "bob", 300)
    second = transfer("alice", "bob", 400, transaction_id=first.transaction_id)
    plan = plan_of([first, second], accounts, {})
    assert plan.dispositions == ["new", "conflict"]
    assert plan.results[1] is None
    assert plan.deltas == {"alice": (-300, 1), "bob": (300, 1)}
    assert plan.new_results == [plan.results[0]]


# --- business refusals -------------------------------------------------------


@pytest.mark.parametrize(
    "move",
    [
        transfer("ghost", "bob", 1),
        transfer("alice", "ghost", 1),
        deposit("ghost", 1),
    ],
    ids=["unknown-sender", "unknown-receiver", "deposit-to-unknown"],
)
def test_account_not_found(move: Transfer) -> None:
    """Protects the account_not_found refusal for either side of a movement."""
    accounts = accounts_of(account("alice", 1000), account("bob", 0))
    plan = plan_of([move], accounts, {})
    assert statuses(plan) == [("failed", "account_not_found")]
    assert plan.deltas == {}


@pytest.mark.parametrize(
    ("sender_currency", "receiver_currency", "transfer_currency"),
    [("USD", "USD", "EUR"), ("EUR", "USD", "USD"), ("USD", "EUR", "USD")],
    ids=["transfer-differs", "sender-differs", "receiver-differs"],
)
def test_currency_mismatch(sender_currency: str, receiver_currency: str, transfer_currency: str) -> None:
    """Protects against moving money between accounts of different currencies."""
    accounts = accounts_of(
        account("alice", 1000, currency=sender_currency), account("bob", 0, currency=receiver_currency)
    )
    plan = plan_of([transfer("alice", "bob", 10, currency=transfer_currency)], accounts, {})
    assert statuses(plan) == [("failed", "currency_mismatch")]
    assert plan.deltas == {}


def test_deposit_currency_mismatch() -> None:
    """Protects deposits against the wrong currency."""
    accounts = accounts_of(account("yen", 0, currency="JPY"))
    plan = plan_of([deposit("yen", 10, currency="USD")], accounts, {})
    assert statuses(plan) == [("failed", "currency_mismatch")]


@pytest.mark.parametrize(
    ("sender_status", "receiver_status"),
    [("frozen", "active"), ("active", "frozen"), ("frozen", "frozen")],
)
def test_account_frozen(sender_status: AccountStatus, receiver_status: AccountStatus) -> None:
    """Protects frozen accounts: they neither send nor receive."""
    accounts = accounts_of(account("alice", 1000, status=sender_status), account("bob", 0, status=receiver_status))
    plan = plan_of([transfer("alice", "bob", 10)], accounts, {})
    assert statuses(plan) == [("failed", "account_frozen")]
    assert plan.deltas == {}


def test_deposit_to_frozen_account_is_refused() -> None:
    """Protects frozen accounts from receiving deposits."""
    accounts = accounts_of(account("alice", 0, status="frozen"))
    plan = plan_of([deposit("alice", 10)], accounts, {})
    assert statuses(plan) == [("failed", "account_frozen")]


def test_refusal_precedence() -> None:
    """Protects the order of refusals: not found, then currency, then frozen, then funds."""
    accounts = accounts_of(
        account("poor_frozen_eur", 0, currency="EUR", status="frozen"),
        account("bob", 0),
        account("bob_eur", 0, currency="EUR"),
    )
    batch = [
        transfer("poor_frozen_eur", "ghost", 10),
        transfer("poor_frozen_eur", "bob", 10),
        transfer("poor_frozen_eur", "bob_eur", 10, currency="EUR"),
    ]
    plan = plan_of(batch, accounts, {})
    assert [code for _, code in statuses(plan)] == ["account_not_found", "currency_mismatch", "account_frozen"]


# --- reserved funds ----------------------------------------------------------


def test_reserved_funds_are_not_spendable() -> None:
    """Protects holds: only balance minus reserved can be spent."""
    accounts = accounts_of(account("alice", 1000, reserved=700), account("bob", 0))
    batch = [transfer("alice", "bob", 301), transfer("alice", "bob", 300), transfer("alice", "bob", 1)]
    plan = plan_of(batch, accounts, {})
    assert statuses(plan) == [
        ("failed", "insufficient_funds"),
        ("success", None),
        ("failed", "insufficient_funds"),
    ]
    assert plan.deltas == {"alice": (-300, 1), "bob": (300, 1)}
    assert final_balances(accounts, plan)["alice"] == accounts["alice"].reserved


def test_fully_reserved_account_cannot_send() -> None:
    """Protects holds: an account whose whole balance is reserved cannot send even one unit."""
    accounts = accounts_of(account("alice", 500, reserved=500), account("bob", 0))
    plan = plan_of([transfer("alice", "bob", 1)], accounts, {})
    assert statuses(plan) == [("failed", "insufficient_funds")]


def test_reserved_account_can_still_receive() -> None:
    """Protects holds: reserved funds do not block incoming money, which is then spendable."""
    accounts = accounts_of(account("alice", 500, reserved=500), account("bob", 1000))
    batch = [transfer("bob", "alice", 200), transfer("alice", "bob", 200)]
    plan = plan_of(batch, accounts, {})
    assert statuses(plan) == [("success", None), ("success", None)]


# --- deposits ----------------------------------------------------------------


def test_deposit_credits_receiver_only() -> None:
    """Protects deposits: money enters from outside, with no sender row to debit."""
    accounts = accounts_of(account("alice", 100), account("bob", 0))
    move = deposit("alice", 250)
    plan = plan_of([move], accounts, {})
    assert statuses(plan) == [("success", None)]
    assert plan.results[0] is not None and plan.results[0].transfer.from_account is None
    assert plan.deltas == {"alice": (250, 1)}
    assert final_balances(accounts, plan) == {"alice": 350, "bob": 0}


def test_deposit_to_account_with_no_funds_succeeds() -> None:
    """Protects deposits from the funds check: an empty account can always be credited."""
    accounts = accounts_of(account("alice", 0))
    plan = plan_of([deposit("alice", 10**12)], accounts, {})
    assert statuses(plan) == [("success", None)]


def test_deposit_replay_from_store() -> None:
    """Protects idempotent deposits: a retried deposit id is replayed, not credited twice."""
    accounts = accounts_of(account("alice", 0))
    move = deposit("alice", 10)
    stored_result = TransferResult(
        transfer=move, status="success", error_code=None, protocol="local", phase="committed"
    )
    stored = {move.transaction_id: stored_result}
    plan = plan_of([move, move], accounts, stored)
    assert plan.dispositions == ["replay", "replay"]
    assert plan.deltas == {}


# --- what is written, and when it is stamped ---------------------------------


def test_records_are_the_new_transfers_as_columns_in_order() -> None:
    """Protects the write: exactly the new transfers are recorded, each with its own outcome,
    and a replay or a conflict writes nothing."""
    accounts = accounts_of(account("alice", 100), account("bob", 0))
    first, poor = transfer("alice", "bob", 60), transfer("alice", "bob", 60)
    clash = transfer("alice", "bob", 1, transaction_id=first.transaction_id)
    plan = plan_local_batch([first, poor, first, clash], accounts, {}, protocol="2pc")
    records = plan.records([first, poor, first, clash])
    assert records.transfers == [first, poor]
    assert (records.protocols, records.statuses, records.phases, records.error_codes) == (
        ["2pc", "2pc"],
        ["success", "failed"],
        ["committed", "aborted"],
        [None, "insufficient_funds"],
    )
    assert plan.records([first, poor, first, clash], [1]).transfers == [poor], "one shard's share of them"


def test_results_carry_the_time_their_record_was_stored() -> None:
    """Protects the answer's created_at: a new record's comes from the shard that wrote it
    (2PC writes on several), a replay's from the stored record."""
    accounts = accounts_of(account("alice", 100), account("bob", 0), account("carol", 0))
    earlier = datetime(2026, 1, 1, tzinfo=UTC)
    old = transfer("alice", "carol", 5)
    stored = {old.transaction_id: TransferResult(old, "success", None, "local", "committed", earlier)}
    to_bob, deposit_carol = transfer("alice", "bob", 5), deposit("carol", 5)
    batch = [to_bob, deposit_carol, old, to_bob]
    plan = plan_local_batch(batch, accounts, stored)
    stamps = {"alice": STAMP, "carol": STAMP.replace(year=2027)}
    results = plan.results(batch, stamp_of=lambda t: stamps[t.from_account or t.to_account])
    assert [r.created_at for r in results if r is not None] == [STAMP, STAMP.replace(year=2027), earlier, STAMP]
