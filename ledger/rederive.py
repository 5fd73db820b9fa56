"""Logic after a code change: each recorded transfer's balance effects re-derived with today's
rules (core/domain/effects.py) and compared with the events the ledger holds for it.

"Live equals replay" shows the ledger and the balances agree; this shows today's planner
would still have written those events: a transfer whose events no path of today's rules
produces is named, with what was recorded and what today's rules allow.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import asyncpg

from core.domain.effects import Effects, Posting, possible_effects
from core.domain.transfers import Transfer
from ledger.partitions import LedgerPartitions, Partition
from shards.pool import ShardPools

PAGE = 5_000
NO_ID = "00000000-0000-0000-0000-000000000000"
RECORDS_PAGE = """
SELECT transaction_id, kind, from_account, to_account, amount, currency, mode, protocol, status FROM transfers
WHERE transaction_id > $1::uuid ORDER BY transaction_id LIMIT $2
"""
EVENTS_OF = """
SELECT e.transaction_id, e.account_id, e.kind, e.amount, e.reserved_delta
FROM ledger_events e JOIN unnest($1::uuid[]) AS wanted(id) ON e.transaction_id = wanted.id
WHERE e.stream = ANY($2::text[])
"""


@dataclass(frozen=True)
class Mismatch:
    transaction_id: str
    shard: str
    protocol: str
    status: str
    recorded: list[Posting]
    allowed: list[list[Posting]]

    def __str__(self) -> str:
        def show(postings: list[Posting]) -> str:
            return (
                "[" + ", ".join(f"{p.kind} {p.account_id} {p.amount:+d}/{p.reserved_delta:+d}" for p in postings) + "]"
            )

        return (
            f"transaction {self.transaction_id} ({self.protocol}, {self.status}, recorded on {self.shard}): the "
            f"ledger has {show(self.recorded)}; today's rules allow " + " or ".join(show(a) for a in self.allowed)
        )


@dataclass
class RederiveReport:
    transfers: int = 0
    mismatches: list[Mismatch] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.mismatches


async def events_of(ledger: LedgerPartitions, transaction_ids: list[str]) -> list[asyncpg.Record]:
    """The ledger events of these transactions, from every server (a transfer's debit and
    credit streams may be on two)."""

    async def one(partition: Partition) -> list[asyncpg.Record]:
        async with partition.connection() as connection:
            return await connection.fetch(EVENTS_OF, transaction_ids, list(partition.streams))

    found = await ledger.each(one)
    return [row for rows in found.values() for row in rows]


def _sorted(effects: Effects) -> list[Posting]:
    return sorted(effects.elements())


async def rederive(
    pools: ShardPools, shards: list[str], ledger: LedgerPartitions, progress: Callable[[int], None] | None = None
) -> RederiveReport:
    """Every transfer record of every shard, a bounded page at a time."""
    report = RederiveReport()
    for shard in shards:
        after = NO_ID
        while True:
            async with pools.connection(shard) as connection:
                records = await connection.fetch(RECORDS_PAGE, after, PAGE)
            if not records:
                break
            after = records[-1][0]
            recorded: dict[str, Effects] = {r[0]: Counter() for r in records}
            for row in await events_of(ledger, list(recorded)):
                recorded[row[0]][Posting(row[1], row[2], row[3], row[4])] += 1
            for transaction_id, kind, source, target, amount, currency, mode, protocol, status in records:
                transfer = Transfer(transaction_id, kind, source, target, amount, currency, mode)
                allowed = possible_effects(transfer, protocol, status)
                if recorded[transaction_id] not in allowed:
                    report.mismatches.append(
                        Mismatch(
                            transaction_id,
                            shard,
                            protocol,
                            status,
                            _sorted(recorded[transaction_id]),
                            [_sorted(a) for a in allowed],
                        )
                    )
            report.transfers += len(records)
            if progress is not None:
                progress(len(records))
    return report
