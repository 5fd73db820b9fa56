"""The bank checker: once faults have stopped and recovery has run, did the run keep
the invariant? It reads the shards and the ledger directly (never through the
coordinator under test) and judges them against what the client saw.

Checks, each an anomaly kind when broken:
  money_created / money_destroyed   sum of balances (available + reserved) != deposits
  negative_balance, open_hold       a balance below zero; reserved money left anywhere
  prepared_left, unfinished_transfer  a prepared 2PC branch; a TC/C or Saga phase not done
  indeterminate                     a transfer whose outcome no retry could learn
  retry_disagrees                   two definite answers for one transaction id differ
  balance_mismatch                  an account != deposits + the transfers the client saw succeed
  succeeded_not_applied, failed_but_applied, applied_twice, partially_applied
                                    per transaction, from its ledger events: a success moved exactly
                                    its amount once from sender to receiver; a failure moved nothing
  ledger_lag, ledger_replay_differs  outbox not drained; replay of the ledger != live balances
  read_unexplained, read_saw_money_created, read_invariant  the periodic reads (below)
"""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from uuid import UUID

import asyncpg

from chaos.history import FAILED, SUCCESS, Read, TransferRecord
from ledger.partitions import LedgerPartitions
from ledger.replay import END_OF_TIME, replay_balances
from shard_router.topology import Topology

EXAMPLES_PER_KIND_MAX = 5
CONNECT_TIMEOUT_S = 10.0

LIVE = "SELECT account_id, balance, reserved, version FROM accounts WHERE account_id = ANY($1::text[])"
PREPARED = "SELECT count(*) FROM pg_prepared_xacts WHERE gid LIKE 'wallet:%'"
UNFINISHED = "SELECT transaction_id FROM phase_state WHERE second_state <> 'done' AND transaction_id = ANY($1::uuid[])"
OUTBOX_PENDING = "SELECT count(*) FROM outbox WHERE account_id = ANY($1::text[])"
LEDGER_EVENTS = """
SELECT transaction_id, account_id, version, amount, reserved_delta, balance_after, reserved_after
FROM ledger_events WHERE account_id = ANY($1::text[]) AND stream = ANY($2::text[])
"""


@dataclass(frozen=True)
class Anomaly:
    kind: str
    detail: str


@dataclass
class CheckReport:
    anomalies: list[Anomaly] = field(default_factory=list)
    reads_checked: int = 0
    read_excess_max: int = 0  # the most a cross-shard read exceeded deposits by (skew, explained)
    timed_out: int = 0  # transfers whose first answer was unknown
    timed_out_applied: int = 0

    def add(self, kind: str, detail: str) -> None:
        self.anomalies.append(Anomaly(kind, detail))

    @property
    def by_kind(self) -> Counter[str]:
        return Counter(a.kind for a in self.anomalies)

    def examples(self) -> list[Anomaly]:
        shown: Counter[str] = Counter()
        out = []
        for anomaly in self.anomalies:
            if shown[anomaly.kind] < EXAMPLES_PER_KIND_MAX:
                shown[anomaly.kind] += 1
                out.append(anomaly)
        return out


@dataclass(frozen=True)
class LedgerEvent:
    transaction_id: UUID
    account_id: str
    version: int
    amount: int
    reserved_delta: int
    balance_after: int
    reserved_after: int


async def fetch(dsn: str, query: str, *arguments: object) -> list[asyncpg.Record]:
    connection = await asyncpg.connect(dsn, timeout=CONNECT_TIMEOUT_S)
    try:
        return await connection.fetch(query, *arguments)
    finally:
        await connection.close()


async def read_live(topology: Topology, accounts: list[str]) -> dict[str, tuple[int, int, int]]:
    """Every run account's (balance, reserved, version), per shard in one statement."""
    by_shard: dict[str, list[str]] = defaultdict(list)
    for account in accounts:
        by_shard[topology.shard_of(account)].append(account)
    parts = await asyncio.gather(*(fetch(topology.shards[s], LIVE, ids) for s, ids in sorted(by_shard.items())))
    return {r["account_id"]: (r["balance"], r["reserved"], r["version"]) for part in parts for r in part}


async def leftovers(topology: Topology, accounts: list[str], transaction_ids: list[UUID]) -> tuple[int, int, int]:
    """(prepared 2PC branches anywhere, unfinished TC/C or Saga phases of the run,
    outbox rows of the run's accounts): all zero once recovery and the relay converged."""
    prepared = unfinished = pending = 0
    for dsn in topology.shards.values():
        prepared += (await fetch(dsn, PREPARED))[0][0]
        unfinished += len(await fetch(dsn, UNFINISHED, transaction_ids))
        pending += (await fetch(dsn, OUTBOX_PENDING, accounts))[0][0]
    return prepared, unfinished, pending


async def check_run(
    topology: Topology,
    accounts: list[str],
    deposits: dict[UUID, tuple[str, int]],
    history: list[TransferRecord],
    reads: list[Read],
    read_anomalies: list[Anomaly],
) -> CheckReport:
    """`deposits`: transaction id -> (account, minor units), every deposit of the run, all
    definite successes made before the workload started."""
    live = await read_live(topology, accounts)
    transfer_ids = [UUID(r.transaction_id) for r in history]
    left = await leftovers(topology, accounts, transfer_ids)
    assert topology.ledgers, "the checker needs the ledger databases"
    parts = await asyncio.gather(
        *(fetch(server.dsn, LEDGER_EVENTS, accounts, list(server.streams)) for server in topology.ledgers.values())
    )
    rows = sorted((row for part in parts for row in part), key=lambda row: (row["account_id"], row["version"]))
    events = [LedgerEvent(**dict(row)) for row in rows]
    report = judge(accounts, deposits, history, live, left, events, read_anomalies)
    await check_replay(report, topology, live)
    check_reads(report, reads, events, sum(amount for _, amount in deposits.values()))
    return report


def judge(
    accounts: list[str],
    deposits: dict[UUID, tuple[str, int]],
    history: list[TransferRecord],
    live: dict[str, tuple[int, int, int]],
    left: tuple[int, int, int],
    events: list[LedgerEvent],
    read_anomalies: Sequence[Anomaly] = (),
) -> CheckReport:
    """The run judged from what was read: `live` (account -> balance, reserved, version), `left`
    (prepared branches, unfinished phases, outbox rows: leftovers()) and the run's ledger
    events, in (account, version) order. The simulator (chaos/simulation/) judges its runs here too."""
    report = CheckReport(anomalies=list(read_anomalies))
    deposited = sum(amount for _, amount in deposits.values())

    # Money: conserved, never negative, nothing held.
    total = sum(balance for balance, _, _ in live.values())
    if total > deposited:
        report.add("money_created", f"balances sum to {total}, deposits to {deposited}")
    elif total < deposited:
        report.add("money_destroyed", f"balances sum to {total}, deposits to {deposited}")
    for account, (balance, reserved, _) in sorted(live.items()):
        if balance < 0:
            report.add("negative_balance", f"{account}: {balance}")
        if reserved != 0:
            report.add("open_hold", f"{account}: {reserved} reserved after recovery")

    prepared, unfinished, pending = left
    if prepared:
        report.add("prepared_left", f"{prepared} prepared transactions remain")
    if unfinished:
        report.add("unfinished_transfer", f"{unfinished} TC/C or Saga transfers not done")
    if pending:
        report.add("ledger_lag", f"{pending} outbox rows of the run's accounts not relayed")

    # What the client saw, against the accounts.
    expected: dict[str, int] = defaultdict(int)
    for account, amount in deposits.values():
        expected[account] += amount
    for record in history:
        definite = [a for a in record.answers if a.definite]
        report.timed_out += record.timed_out
        if not definite:
            report.add("indeterminate", f"{record.transaction_id}: no definite answer after every retry")
            continue
        if len({(a.outcome, a.code) for a in definite}) > 1 or any(a.code == "idempotency_conflict" for a in definite):
            report.add("retry_disagrees", f"{record.transaction_id}: answers {[(a.outcome, a.code) for a in definite]}")
        if definite[-1].outcome == SUCCESS:
            expected[record.from_account] -= record.amount
            expected[record.to_account] += record.amount
    for account in sorted(accounts):
        if live.get(account, (0, 0, 0))[0] != expected[account]:
            report.add(
                "balance_mismatch",
                f"{account}: live {live.get(account, (0, 0, 0))[0]}, deposits plus "
                f"client-seen successes {expected[account]}",
            )

    # Each transaction, from its own ledger events.
    check_transactions(report, history, deposits, events)
    return report


def check_transactions(
    report: CheckReport, history: list[TransferRecord], deposits: dict[UUID, tuple[str, int]], events: list[LedgerEvent]
) -> None:
    net: dict[UUID, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    held: dict[UUID, int] = defaultdict(int)
    for event in events:
        net[event.transaction_id][event.account_id] += event.amount
        held[event.transaction_id] += event.reserved_delta
    for transaction_id, (account, amount) in deposits.items():
        if dict(net.pop(transaction_id, {})) != {account: amount}:
            report.add("succeeded_not_applied", f"deposit {transaction_id} of {amount} to {account} not applied once")
    for record in history:
        transaction_id = UUID(record.transaction_id)
        moved = {account: change for account, change in net.pop(transaction_id, {}).items() if change}
        if held.get(transaction_id, 0):
            report.add("open_hold", f"{transaction_id}: holds do not net to zero in the ledger")
        final = record.final
        whole = {record.from_account: -record.amount, record.to_account: record.amount}
        if final is None:
            continue  # reported as indeterminate
        if record.timed_out and moved == whole:
            report.timed_out_applied += 1
        if final.outcome == SUCCESS and moved != whole:
            kind = (
                "applied_twice"
                if moved.get(record.from_account, 0) < -record.amount
                else "succeeded_not_applied"
                if not moved
                else "partially_applied"
            )
            report.add(kind, f"{transaction_id} ({record.mode}) answered success, the ledger moved {moved}")
        elif final.outcome == FAILED and moved:
            kind = "failed_but_applied" if moved == whole else "partially_applied"
            report.add(kind, f"{transaction_id} ({record.mode}) answered {final.code}, the ledger moved {moved}")
    for transaction_id, moved in net.items():
        if any(moved.values()):
            report.add(
                "partially_applied", f"{transaction_id}: ledger events of no transfer the client sent: {dict(moved)}"
            )


async def check_replay(report: CheckReport, topology: Topology, live: dict[str, tuple[int, int, int]]) -> None:
    partitions = await LedgerPartitions(topology.ledgers).open()
    try:
        replayed = {}
        for account in sorted(live):
            state = (await replay_balances(partitions, END_OF_TIME, account)).balances.get(account)
            if state is not None:
                replayed[account] = (state.balance, state.reserved, state.version)
        compare_replay(report, live, replayed)
    finally:
        await partitions.close()


def compare_replay(
    report: CheckReport, live: dict[str, tuple[int, int, int]], replayed: dict[str, tuple[int, int, int]]
) -> None:
    """Each account's (balance, reserved, version), live against the ledger's replay."""
    for account, state in sorted(live.items()):
        again = replayed.get(account, (0, 0, 0))
        if again != state:
            report.add(
                "ledger_replay_differs", f"{account}: live {state}, ledger replay {again} (balance, reserved, version)"
            )


def check_reads(report: CheckReport, reads: list[Read], events: list[LedgerEvent], deposited: int) -> None:
    """The periodic reads, judged against the final history.

    A read is one statement per shard: consistent on each shard, not across them. Its
    cross-shard sum can exceed deposits without anything being wrong: it may see a
    transfer's credit on one shard and, on the other (read earlier, or a 2PC branch
    still prepared), not yet its debit. So "sum <= deposits" is not sound here. What is:
      1. each account's state in the read is one its ledger history reaches (the event
         at the read version states exactly that balance and reserved): no money moved
         outside a recorded event, not even for a moment;
      2. the read's excess over deposits is covered by transfers caught half-seen whose
         whole history is money-neutral: sum over transfers T of max(0, what the read saw
         of T) for each T whose events net to zero. Money that a read saw and that no
         neutral transfer explains was created.
    (Per-shard invariants, checked while reading: no negative balance, 0 <= reserved <=
    balance, no shard holding more than every deposit.)"""
    at_version = {(e.account_id, e.version): e for e in events}
    by_account: dict[str, list[LedgerEvent]] = defaultdict(list)
    for event in events:
        by_account[event.account_id].append(event)
    net_of: dict[UUID, int] = defaultdict(int)
    for event in events:
        net_of[event.transaction_id] += event.amount
    for read in reads:
        report.reads_checked += 1
        seen: dict[UUID, int] = defaultdict(int)
        explained = True
        for account, (balance, reserved, version) in read.accounts.items():
            seen_event = at_version.get((account, version))
            state = (seen_event.balance_after, seen_event.reserved_after) if seen_event else (0, 0)
            if state != (balance, reserved):
                explained = False
                report.add(
                    "read_unexplained",
                    f"read at {read.at_s:.1f}s: {account} (balance {balance}, reserved "
                    f"{reserved}) at version {version}; the ledger says {state}",
                )
            for included in by_account[account]:
                if included.version > version:
                    break
                seen[included.transaction_id] += included.amount
        excess = sum(balance for balance, _, _ in read.accounts.values()) - deposited
        report.read_excess_max = max(report.read_excess_max, excess)
        covered = sum(max(0, amount) for transaction_id, amount in seen.items() if net_of[transaction_id] == 0)
        if explained and excess > covered:
            report.add(
                "read_saw_money_created",
                f"read at {read.at_s:.1f}s: {excess} over deposits, half-seen neutral transfers explain {covered}",
            )
