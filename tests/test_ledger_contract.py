"""The ledger partition contract (ledger/contract.py), one suite run on PostgreSQL and on the
simulator's twin (chaos/simulation/ledger.py): an append holds its stream's head, lands whole
at its end or not at all, and what landed reads back as a chain that verifies."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from uuid import uuid4

import pytest

from chaos.simulation.ledger import SimulatedLedgerServer
from ledger.chain import GENESIS, LedgerEvent, StreamVerifier
from ledger.contract import LedgerPartition, StreamAppend
from ledger.partitions import LedgerPartitions
from ledger.relay import chain_rows
from shard_router.topology import LedgerServer
from shards.contract import RelayRow

MOMENTS = ["2026-01-01T00:00:01.000001Z", "2026-01-01T00:00:02.000000Z", "2026-01-01T00:00:01.500000Z"]


class Broken(Exception):
    pass


@pytest.fixture(params=["simulated", pytest.param("postgres", marks=pytest.mark.cluster)])
def backend(request: pytest.FixtureRequest) -> LedgerServer | None:
    """None for the simulated server; else the test cluster's first ledger server."""
    if request.param == "simulated":
        return None
    cluster = request.getfixturevalue("cluster")
    return next(iter(cluster.topology.ledgers.values()))


@pytest.fixture
async def partition(backend: LedgerServer | None) -> AsyncIterator[LedgerPartition]:
    if backend is None:
        yield SimulatedLedgerServer("ledger0", ())
        return
    partitions = await LedgerPartitions({"ledger0": backend}).open()
    try:
        yield partitions["ledger0"]
    finally:
        await partitions.close()


def relay_rows(account: str, versions: range, first_event_id: int) -> list[RelayRow]:
    """Outbox rows as the relay reads them (shards/outbox.py's SELECT_FOR_RELAY)."""
    rows = []
    for offset, version in enumerate(versions):
        event_id, at = first_event_id + offset, MOMENTS[offset % len(MOMENTS)]
        fields = (event_id, str(uuid4()), account, version, "deposit", 10, 0, 10 * version, 0, "USD", at)
        rows.append((event_id, account, version, at, "\x1f".join(str(f) for f in fields)))
    return rows


async def append_rows(appending: StreamAppend, stream: str, rows: list[RelayRow]) -> None:
    position, head, _, _ = appending.head
    chained = chain_rows(stream, position, head, rows, set(), lambda account, version: None)
    await appending.extend(chained.lines, chained.position, chained.head, chained.source_high)


async def events_of(partition: LedgerPartition, stream: str) -> list[LedgerEvent]:
    return [event async for page in partition.stream_events(stream) for event in page]


async def test_an_append_lands_whole_and_reads_back_as_a_chain(partition: LedgerPartition) -> None:
    """A new stream starts at genesis, live; an append moves the head and its rows read back in
    position order, chained and verifying, with visible_at the running maximum of moments."""
    stream, account = f"contract_{uuid4().hex[:10]}", f"contract-{uuid4().hex[:12]}"
    async with partition.append(stream) as appending:
        assert appending.head == (0, GENESIS, "live", 0)
        await append_rows(appending, stream, relay_rows(account, range(1, 4), 101))
    async with partition.append(stream) as appending:
        assert appending.head.position == 3 and appending.head.source_high == 103
        assert await appending.present([(account, 2), (account, 9)]) == {(account, 2)}
        assert await appending.prior_visible({account: 3}) == {account: MOMENTS[1]}  # the maximum so far
    events = await events_of(partition, stream)
    assert [(e.position, e.version, e.balance_after) for e in events] == [(1, 1, 10), (2, 2, 20), (3, 3, 30)]
    verifier = StreamVerifier(stream)
    verifier.feed(events)
    assert verifier.breaks == [] and events[-1].hash == appending.head.hash
    assert await partition.prior_visible({account: 1, "contract-nobody": 1}) == {account: MOMENTS[0]}


async def test_an_append_that_fails_keeps_nothing(partition: LedgerPartition) -> None:
    """Rows extended in an append that then fails are not there, nor is the head moved."""
    stream, account = f"contract_{uuid4().hex[:10]}", f"contract-{uuid4().hex[:12]}"
    with pytest.raises(Broken):
        async with partition.append(stream) as appending:
            await append_rows(appending, stream, relay_rows(account, range(1, 3), 1))
            raise Broken
    async with partition.append(stream) as appending:
        assert appending.head.position == 0
    assert await events_of(partition, stream) == []


async def test_a_second_append_of_a_stream_waits_for_the_first(partition: LedgerPartition) -> None:
    """The head is held for the whole append: a second one starts from where the first left it."""
    stream, account = f"contract_{uuid4().hex[:10]}", f"contract-{uuid4().hex[:12]}"
    heads = []

    async def second() -> None:
        async with partition.append(stream) as appending:
            heads.append(appending.head.position)

    async with partition.append(stream) as appending:
        waiting = asyncio.ensure_future(second())
        await asyncio.sleep(0.05)
        assert not waiting.done()
        await append_rows(appending, stream, relay_rows(account, range(1, 2), 7))
    await waiting
    assert heads == [1]
