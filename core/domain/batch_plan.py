"""Group commit's decision step, as a pure function.

The shard layer locks every account a batch touches (in account-id order), hands
their rows here, and applies what comes back: one folded delta per account, one
record per transfer. Transfers are decided in arrival order, each against the
balances its predecessors left, so one insufficient-funds transfer fails alone.

The plan is columns, not objects: per transfer its disposition, and for new ones the
refusal code (None: it moves); results are made once, when the record's time is known.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from core.domain.accounts import Account
from core.domain.errors import RecordedCode
from core.domain.postings import Postings
from core.domain.transfers import ProtocolName, RecordColumns, Transfer, TransferResult

# What the plan does with one transfer: record it, answer with its stored record, or refuse
# it (its id belongs to a different request).
Disposition = Literal["new", "replay", "conflict"]


@dataclass
class BatchPlan:
    postings: Postings
    protocol: ProtocolName = "local"
    # Per transfer, where a batch mixes them: a two-phase batch also carries the one-shard
    # transfers of its shards (coordinator/service/rounds.py), recorded as `local`.
    protocols: list[ProtocolName] | None = None
    # One entry per input transfer, in input order.
    dispositions: list[Disposition] = field(default_factory=list)
    codes: list[RecordedCode | None] = field(default_factory=list)  # a new transfer's refusal (None: it moves)
    # A replay's answer: the stored result, or the index of the batch's first transfer of its id.
    replayed: dict[int, TransferResult | int] = field(default_factory=dict)
    new: list[int] = field(default_factory=list)  # indexes of the transfers to record, in order

    @property
    def deltas(self) -> dict[str, tuple[int, int]]:
        """account_id -> (balance delta, versions). Folded: one row update per account."""
        return {a: (c.balance_delta, c.versions) for a, c in self.postings.changes.items()}

    def records(self, transfers: list[Transfer], indexes: list[int] | None = None) -> RecordColumns:
        """The records to write for the new transfers (or those of them at `indexes`), in order."""
        chosen = self.new if indexes is None else indexes
        codes = [self.codes[index] for index in chosen]
        return RecordColumns(
            [transfers[index] for index in chosen],
            [self.protocol] * len(chosen) if self.protocols is None else [self.protocols[index] for index in chosen],
            ["success" if code is None else "failed" for code in codes],
            ["committed" if code is None else "aborted" for code in codes],
            codes,
        )

    def results(
        self,
        transfers: list[Transfer],
        stamp: datetime | None = None,
        stamp_of: Callable[[Transfer], datetime | None] | None = None,
    ) -> list[TransferResult | None]:
        """Each transfer's result (None: a conflict), made once its record's time is known:
        new records carry `stamp`, or their debit shard's from `stamp_of` (2PC writes records
        on several shards)."""
        made: list[TransferResult | None] = []
        protocol, protocols, codes, replayed = self.protocol, self.protocols, self.codes, self.replayed
        for index, (transfer, disposition) in enumerate(zip(transfers, self.dispositions, strict=True)):
            if disposition == "new":
                if protocols is not None:
                    protocol = protocols[index]
                moment = stamp if stamp_of is None else stamp_of(transfer)
                code = codes[index]
                made.append(
                    TransferResult(transfer, "success", None, protocol, "committed", moment)
                    if code is None
                    else TransferResult(transfer, "failed", code, protocol, "aborted", moment)
                )
            elif disposition == "replay":
                answer = replayed[index]
                made.append(made[answer] if isinstance(answer, int) else answer)
            else:
                made.append(None)
        return made


def plan_local_batch(
    transfers: list[Transfer],
    accounts: dict[str, Account],
    stored: dict[str, TransferResult],
    protocol: ProtocolName = "local",
    protocols: list[ProtocolName] | None = None,
) -> BatchPlan:
    assert protocols is None or len(protocols) == len(transfers), "one protocol per transfer"
    postings = Postings(accounts)
    plan = BatchPlan(postings, protocol, protocols)
    dispositions, codes, replayed, new = plan.dispositions, plan.codes, plan.replayed, plan.new
    first_of: dict[str, int] = {}  # transaction id -> index of its first occurrence in the batch
    post = postings.post

    for index, transfer in enumerate(transfers):
        transaction_id = transfer.transaction_id
        earlier = stored.get(transaction_id)
        if earlier is not None:
            same = earlier.transfer.movement == transfer.movement
            dispositions.append("replay" if same else "conflict")
            codes.append(None)
            if same:
                replayed[index] = earlier
            continue
        first = first_of.get(transaction_id)
        if first is not None:
            same = transfers[first].movement == transfer.movement
            dispositions.append("replay" if same else "conflict")
            codes.append(None)
            if same:
                replayed[index] = first
            continue
        first_of[transaction_id] = index
        error_code = refusal(transfer, accounts, postings)
        if error_code is None:
            if transfer.from_account is None:
                post(transaction_id, transfer.to_account, "deposit", transfer.amount)
            else:
                post(transaction_id, transfer.from_account, "debit", -transfer.amount)
                post(transaction_id, transfer.to_account, "credit", transfer.amount)
        dispositions.append("new")
        codes.append(error_code)
        new.append(index)

    assert len(dispositions) == len(transfers)
    return plan


def refusal(transfer: Transfer, accounts: dict[str, Account], postings: Postings) -> RecordedCode | None:
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
