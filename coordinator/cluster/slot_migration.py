"""Online slot migration: `wallet topology move-slot <slot> <target>`.

  1. copy   the slot's live accounts to the target as `incoming` rows, page by page,
            while transfers keep flowing (nothing is locked);
  2. flip   on the source, one transaction: release the slot (shard_slots), lock the
            slot's accounts, check no hold or unfinished TC/C/Saga transfer touches
            them (else roll back, wait, try again), mark them `moved`;
  3. land   on the target, one transaction: write their final state `live`, claim the slot;
  4. route  save topology version+1 with the slot on the target; coordinators switch by
            their watch, and one still routing to the source is refused there and
            re-reads the topology.

Between 2 and 4 the slot's accounts are served by nobody (refused on both shards, and
the coordinators' bounded re-routing absorbs it): never by two. Every step can be run
again: a crash anywhere is finished by running the same command again, which resumes
from what the shards say (who owns the slot, which rows are moved).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import asyncpg

from core.runtime.fan_out import fan_out
from shard_router.slots import SLOT_COUNT, slot_of
from shard_router.stores import TopologyStore
from shard_router.topology import Topology, TopologyError
from shards import placement
from shards.errors import ShardRetryable
from shards.pool import Connection, ShardPools

log = logging.getLogger("wallet.slot_migration")

FLIP_ATTEMPTS_MAX = 40
FLIP_RETRY_WAIT_MS = 250
SAVE_ATTEMPTS_MAX = 5


class MigrationError(RuntimeError):
    """The move cannot go on; the message says why and what to do."""


class SlotBusy(Exception):
    """A hold or an unfinished transfer touches the slot: the flip waits for it."""


@dataclass
class MoveReport:
    slot: int
    source: str
    target: str
    copied: int = 0  # rows copied live (step 1)
    moved: int = 0  # accounts that changed shard (steps 2-3)
    flip_attempts: int = 0
    resumed: str | None = None  # which step an earlier, interrupted run had reached
    version: int = 0  # the topology version that routes the slot to the target


def slots_in(text: str) -> list[int]:
    """`7` or `0-99`, inside 0..SLOT_COUNT-1."""
    first, _, last = text.partition("-")
    try:
        low, high = int(first), int(last or first)
    except ValueError:
        raise MigrationError(f"slot must be N or FIRST-LAST, got {text!r}") from None
    if not 0 <= low <= high < SLOT_COUNT:
        raise MigrationError(f"slots must be within 0..{SLOT_COUNT - 1}, got {text!r}")
    return list(range(low, high + 1))


def pinned_to(topology: Topology, shard: str, slot: int) -> list[str]:
    """Accounts of `slot` the directory pins to `shard`: they stay where they are."""
    return sorted(a for a, s in topology.overrides.items() if s == shard and slot_of(a) == slot)


async def move_slot(store: TopologyStore, pools: ShardPools, slot: int, target: str) -> MoveReport:
    topology = await asyncio.to_thread(store.load)
    if target not in topology.shards:
        raise MigrationError(f"no shard {target!r} in the topology; it has {sorted(topology.shards)}")
    source = topology.slots[slot]
    report = MoveReport(slot, source, target)
    if source == target:
        report.version = topology.version
        return report
    pinned = pinned_to(topology, source, slot)
    async with pools.connection(target) as connection:
        target_owns = await placement.owns_slot(connection, slot)
    async with pools.connection(source) as connection:
        source_owns = await placement.owns_slot(connection, slot)
    if target_owns and source_owns:
        raise MigrationError(f"slot {slot} is claimed by both {source} and {target}: repair shard_slots by hand")
    if target_owns:
        report.resumed = "landed"
    elif not source_owns:
        report.resumed = "flipped"
        rows = await read_all(pools, source, slot, "moved", pinned)
        report.moved = await land(pools, target, slot, rows)
    else:
        report.copied = await copy_live(pools, source, target, slot, pinned)
        rows = await flip(pools, topology, source, slot, pinned, report)
        report.moved = await land(pools, target, slot, rows)
    report.version = await route(store, slot, target)
    log.info(
        "slot %s moved %s -> %s: %s accounts (%s copied live first, %s flip attempts), topology version %s",
        slot,
        source,
        target,
        report.moved,
        report.copied,
        report.flip_attempts,
        report.version,
    )
    return report


async def read_all(pools: ShardPools, shard: str, slot: int, state: str, pinned: list[str]) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = []
    after = ""
    async with pools.connection(shard) as connection:
        while True:
            page = await placement.select_slot_page(connection, slot, state, after, pinned)
            rows.extend(page)
            if len(page) < placement.COPY_PAGE_MAX:
                return rows
            after = page[-1]["account_id"]


async def copy_live(pools: ShardPools, source: str, target: str, slot: int, pinned: list[str]) -> int:
    copied = 0
    after = ""
    while True:
        async with pools.connection(source) as connection:
            page = await placement.select_slot_page(connection, slot, "live", after, pinned)
        async with pools.transaction(target) as connection:
            written = await placement.upsert_accounts(connection, page, "incoming")
        if written != len(page):
            raise MigrationError(f"{target} already serves some of slot {slot}'s accounts live: check the topology")
        copied += written
        if len(page) < placement.COPY_PAGE_MAX:
            return copied
        after = page[-1]["account_id"]


async def flip(
    pools: ShardPools, topology: Topology, source: str, slot: int, pinned: list[str], report: MoveReport
) -> list[asyncpg.Record]:
    for attempt in range(FLIP_ATTEMPTS_MAX):
        report.flip_attempts = attempt + 1
        try:
            async with pools.transaction(source) as connection:
                if not await placement.release_slot(connection, slot):
                    raise MigrationError(
                        f"{source} stopped owning slot {slot} during the move: another mover? run it again"
                    )
                rows = await placement.lock_slot_accounts(connection, slot, pinned)
                ids = [row["account_id"] for row in rows]
                if any(row["reserved"] for row in rows):
                    raise SlotBusy("a hold is open")
                if ids and await unfinished_touching(pools, topology, source, connection, ids):
                    raise SlotBusy("an unfinished TC/C or Saga transfer touches the slot")
                assert await placement.mark_moved(connection, ids) == len(ids), "every locked live row is marked moved"
            return rows
        except (SlotBusy, ShardRetryable) as reason:
            log.info("slot %s flip attempt %s: %s; waiting", slot, attempt + 1, reason)
            await asyncio.sleep(FLIP_RETRY_WAIT_MS / 1000)
    raise MigrationError(f"slot {slot} stayed busy for {FLIP_ATTEMPTS_MAX} attempts; nothing moved, run it again later")


async def unfinished_touching(
    pools: ShardPools, topology: Topology, source: str, source_connection: Connection, ids: list[str]
) -> int:
    async def one(shard: str) -> int:
        if shard == source:
            return await placement.count_unfinished_touching(source_connection, ids)
        async with pools.connection(shard) as connection:
            return await placement.count_unfinished_touching(connection, ids)

    at_source = await one(source)  # on the flip's own connection: not concurrently with the others
    elsewhere = await fan_out([s for s in sorted(topology.shards) if s != source], one)
    elsewhere.raise_first()
    return at_source + sum(elsewhere.results.values())


async def land(pools: ShardPools, target: str, slot: int, rows: list[asyncpg.Record]) -> int:
    async with pools.transaction(target) as connection:
        written = await placement.upsert_accounts(connection, rows, "live")
        if written != len(rows):
            raise MigrationError(f"{target} already serves some of slot {slot}'s accounts live: check the topology")
        await placement.claim_slot(connection, slot)
    return written


async def route(store: TopologyStore, slot: int, target: str) -> int:
    """Save the topology with the slot on the target (compare-and-set, re-read on a race)."""
    for _ in range(SAVE_ATTEMPTS_MAX):
        current = await asyncio.to_thread(store.load)
        if current.slots[slot] == target:
            return current.version
        slots = list(current.slots)
        slots[slot] = target
        moved = Topology(current.version + 1, current.shards, tuple(slots), current.overrides, current.ledgers)
        try:
            await asyncio.to_thread(store.save, moved)
            return moved.version
        except TopologyError as error:
            log.info("topology changed while saving slot %s: %s; again", slot, error)
    raise MigrationError(f"could not save the topology for slot {slot}: it keeps changing; run the move again")
