"""Verification of the hash chain, and the audit of live balances against the ledger."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import asyncpg

from core.runtime.fan_out import fan_out
from ledger import store
from ledger.chain import Break, StreamVerifier
from ledger.history import account_history
from ledger.partitions import LedgerPartitions, Partition
from ledger.replay import END_OF_TIME, ReplayedBalance, replay_balances
from shards import outbox as outbox_sql
from shards.pool import ShardPools

LIVE_PAGE_SIZE = 10_000
EXPLAINING_EVENTS_MAX = 20

LIVE_PAGE = """
SELECT account_id, currency, balance, reserved, version FROM accounts
WHERE account_id > $1 AND placement = 'live' ORDER BY account_id LIMIT $2
"""


async def verify_chain(partitions: LedgerPartitions, progress: Callable[[int], None] | None = None) -> list[Break]:
    """Every stream's chain, on the server that holds it (the servers at once)."""

    async def one(partition: Partition) -> list[Break]:
        breaks: list[Break] = []
        async with partition.connection() as ledger:
            for stream in await store.streams_held(ledger, partition.streams):
                verifier = StreamVerifier(stream)
                async for page in store.stream_events(ledger, stream):
                    verifier.feed(page)
                    if progress is not None:
                        progress(len(page))
                breaks.extend(verifier.breaks)
        return breaks

    found = await partitions.each(one)
    return sorted((b for breaks in found.values() for b in breaks), key=lambda b: (b.stream, b.position))


@dataclass(frozen=True)
class Difference:
    account_id: str
    shard: str
    expected: tuple[int, int, int]  # (balance, reserved, version) by the ledger (+ pending outbox)
    actual: tuple[int, int, int]  # live
    transactions: list[str]  # the events that explain it, or the latest ones where nothing does
    explanation: str


@dataclass
class AuditReport:
    accounts: int = 0
    differences: list[Difference] = field(default_factory=list)  # anomalies: nothing explains them
    lagging: list[Difference] = field(default_factory=list)  # explained by events not yet relayed
    outbox_lag: dict[str, tuple[int, int]] = field(default_factory=dict)  # shard -> (events, oldest ms)
    breaks: list[Break] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.differences and not self.breaks


async def live_balances(pools: ShardPools, shard: str) -> dict[str, tuple[str, int, int, int]]:
    found: dict[str, tuple[str, int, int, int]] = {}
    after = ""
    async with pools.connection(shard) as connection:
        while True:
            rows = await connection.fetch(LIVE_PAGE, after, LIVE_PAGE_SIZE)
            for row in rows:
                found[row["account_id"]] = (row["currency"], row["balance"], row["reserved"], row["version"])
            if len(rows) < LIVE_PAGE_SIZE:
                return found
            after = rows[-1]["account_id"]


async def audit(
    pools: ShardPools, shards: list[str], ledger: LedgerPartitions, progress: Callable[[int], None] | None = None
) -> AuditReport:
    """`progress` counts the events verified, then those replayed."""
    report = AuditReport()
    report.breaks = await verify_chain(ledger, progress)
    replayed = (await replay_balances(ledger, END_OF_TIME, progress=progress)).balances
    read = await fan_out(shards, lambda shard: live_balances(pools, shard))
    read.raise_first()
    lives = [read.results[shard] for shard in shards]
    for shard, live in zip(shards, lives, strict=True):
        async with pools.connection(shard) as connection:
            report.outbox_lag[shard] = await outbox_sql.outbox_lag(connection)
        report.accounts += len(live)
        mismatched = {
            account_id: state for account_id, state in live.items() if _state(replayed.get(account_id)) != state[1:]
        }
        if not mismatched:
            continue
        async with pools.connection(shard) as connection:
            pending_rows = await outbox_sql.select_account_outbox(connection, sorted(mismatched))
        pending: dict[str, list[asyncpg.Record]] = {}
        for row in pending_rows:
            pending.setdefault(row["account_id"], []).append(row)
        for account_id, state in sorted(mismatched.items()):
            report_difference(
                report, shard, account_id, state[1:], replayed.get(account_id), pending.get(account_id, [])
            )
        for account_id in [a for a in sorted(mismatched) if not pending.get(a)]:
            await explain(report, ledger, account_id)
    live_ids = {account_id for live in lives for account_id in live}
    for account_id in sorted(set(replayed) - live_ids):
        report.differences.append(
            Difference(
                account_id,
                "?",
                _state(replayed[account_id]),
                (0, 0, 0),
                [],
                "the ledger has events for an account no shard holds",
            )
        )
    return report


def _state(balance: ReplayedBalance | None) -> tuple[int, int, int]:
    return (0, 0, 0) if balance is None else (balance.balance, balance.reserved, balance.version)


def report_difference(
    report: AuditReport,
    shard: str,
    account_id: str,
    actual: tuple[int, int, int],
    replayed: ReplayedBalance | None,
    pending: list[asyncpg.Record],
) -> None:
    balance, reserved, version = _state(replayed)
    applied: list[str] = []
    for row in pending:
        if row["version"] == version + 1:
            balance, reserved, version = balance + row["amount"], reserved + row["reserved_delta"], row["version"]
            applied.append(row["transaction_id"])
    expected = (balance, reserved, version)
    if applied and expected == actual:
        report.lagging.append(
            Difference(
                account_id, shard, expected, actual, applied, f"{len(applied)} events not yet relayed explain it"
            )
        )
    else:
        report.differences.append(Difference(account_id, shard, expected, actual, applied, ""))


async def explain(report: AuditReport, ledger: LedgerPartitions, account_id: str) -> None:
    """Name the events behind an anomaly: the first whose stored balance the replay does not
    reach (an edited event), else the latest ones (the live row changed outside the ledger)."""
    index = next(i for i, d in enumerate(report.differences) if d.account_id == account_id)
    difference = report.differences[index]
    balance = reserved = 0
    after = 0
    latest: list[str] = []
    while True:
        events = await account_history(ledger, account_id, after, store.PAGE_SIZE_MAX)
        for event in events:
            balance, reserved = balance + event.amount, reserved + event.reserved_delta
            if (balance, reserved) != (event.balance_after, event.reserved_after):
                report.differences[index] = Difference(
                    account_id,
                    difference.shard,
                    difference.expected,
                    difference.actual,
                    [event.transaction_id],
                    f"ledger event version {event.version} (transaction {event.transaction_id}, stream "
                    f"{event.stream} position {event.position}) does not add up: it was edited",
                )
                return
            latest = (latest + [event.transaction_id])[-EXPLAINING_EVENTS_MAX:]
        if len(events) < store.PAGE_SIZE_MAX:
            break
        after = events[-1].version
    live_balance = difference.actual[0]
    report.differences[index] = Difference(
        account_id,
        difference.shard,
        difference.expected,
        difference.actual,
        latest,
        f"no event explains a difference of {live_balance - difference.expected[0]} minor units: "
        "the live balance changed outside the ledger",
    )
