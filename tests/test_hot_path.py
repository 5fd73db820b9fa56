"""The batch path's encodings and shortcuts say exactly what the slow forms said.

Array literals (shards/arrays.py), the remembered routes (Topology.shard_of), the
request hash computed by the server (shards/transfers.py) and the coalesced idempotency
lookups (coordinator/service/record_lookup.py): each is checked against the form it
replaced, against real shards where it runs on one.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid

import asyncpg
import pytest

from coordinator.service.wallet import WalletService
from core.domain.transfers import Transfer
from shard_router.slots import slot_of
from shard_router.topology import Topology
from shards.arrays import int_array, nullable_text_array, text_array
from shards.errors import ShardUnavailable
from tests.helpers import accounts_on, open_accounts


def test_array_literals_and_their_refusals() -> None:
    assert text_array(["a", "b-1:x.y_z"]) == '{"a","b-1:x.y_z"}'
    assert text_array([]) == "{}"
    assert nullable_text_array([None, "NULL", "x"]) == '{NULL,"NULL","x"}'
    assert int_array([0, -2, 10**15]) == "{0,-2,1000000000000000}"
    for bad in (['a"b'], ["a\\b"], ["a\x1fb"]):
        with pytest.raises(AssertionError):
            text_array(bad)
    with pytest.raises(AssertionError):
        nullable_text_array(['a"', None])
    with pytest.raises(TypeError):
        int_array([1.5])  # type: ignore[list-item]  # the wrong type, on purpose


async def test_array_literals_round_trip_through_postgres(topology: Topology) -> None:
    """The server reads back exactly the values, in order: 'NULL' the word stays a word."""
    texts = ["NULL", "null", "a", "Z-9", "x.y:z_w", "0"]
    nullable = [None, "NULL", "b", None]
    ints = [0, -1, 2**62, -(2**62)]
    connection = await asyncpg.connect(topology.shards["shard0"])
    try:
        row = await connection.fetchrow(
            "SELECT ($1::text)::text[], ($2::text)::text[], ($3::text)::bigint[]",
            text_array(texts),
            nullable_text_array(nullable),
            int_array(ints),
        )
    finally:
        await connection.close()
    assert row is not None and tuple(row) == (texts, nullable, ints)


def test_remembered_routes_match_the_hash_and_the_pins() -> None:
    shards = {f"shard{i}": f"postgresql://h/{i}" for i in range(4)}
    topology = Topology.even(shards)
    pinned = Topology(2, shards, topology.slots, {"acct-7": "shard3"})
    ids = [f"acct-{i}" for i in range(2000)]
    for _ in range(2):  # the second pass is answered from memory
        assert [topology.shard_of(a) for a in ids] == [topology.slots[slot_of(a)] for a in ids]
        assert pinned.shard_of("acct-7") == "shard3"
    assert topology == Topology.even(shards)  # the memory is not part of the value


async def test_the_server_stores_the_request_hash_records_always_had(
    service: WalletService, topology: Topology
) -> None:
    """Stored with every record and phase row, so it must never change: the server's hash
    equals SHA-256 of json.dumps([kind, from, to, amount, currency], separators=(",", ":")),
    for deposits (from null), transfers and TC/C phase rows."""
    from shards.pool import connect

    ids = accounts_on(topology, "shard1", 1, "hash.a") + accounts_on(topology, "shard2", 1, "hash_B:9")
    await open_accounts(service, ids, deposit="10.00")
    made = [
        await service.deposit(ids[0], "1.23", str(uuid.uuid4()), "USD"),
        await service.transfer(ids[0], ids[1], "0.07", "USD", str(uuid.uuid4()), "2pc"),
        await service.transfer(ids[1], ids[0], "0.05", "USD", str(uuid.uuid4()), "tcc"),
    ]
    for result in made:
        t = result.transfer
        expected = hashlib.sha256(
            json.dumps([t.kind, t.from_account, t.to_account, t.amount, t.currency], separators=(",", ":")).encode()
        ).digest()
        connection = await connect(topology.shards[topology.shard_of(t.from_account or t.to_account)])
        try:
            stored = await connection.fetchval(
                "SELECT request_hash FROM transfers WHERE transaction_id = $1", t.transaction_id
            )
            phase = await connection.fetchval(
                "SELECT request_hash FROM phase_state WHERE transaction_id = $1", t.transaction_id
            )
        finally:
            await connection.close()
        assert stored == expected, t
        assert phase == (expected if t.mode == "tcc" else None), t


async def test_concurrent_lookups_share_statements_and_each_gets_its_own(
    service: WalletService, topology: Topology
) -> None:
    ids = accounts_on(topology, "shard1", 2, "look") + accounts_on(topology, "shard2", 1, "look")
    await open_accounts(service, ids, deposit="10.00")
    done = []
    for index in range(30):
        transaction_id = str(uuid.uuid4())
        await service.transfer(ids[index % 2], ids[2], "0.01", "USD", str(transaction_id))
        done.append(transaction_id)
    lookup = service.records.lookups["shard1"]
    before = lookup.batches_applied
    fresh = [[str(uuid.uuid4()), done[index]] for index in range(30)]
    answers = await asyncio.gather(*(service.records.find_on(["shard1", "shard2"], request) for request in fresh))
    for request, answer in zip(fresh, answers, strict=True):
        assert set(answer) == {request[1]}, "each caller sees its own ids' records, and only those"
        assert answer[request[1]].transfer.transaction_id == request[1]
    assert lookup.batches_applied - before < 30, "concurrent lookups on one shard share statements"


async def test_a_lookup_on_a_shard_that_is_down_fails_every_caller(service: WalletService, cluster) -> None:
    lookup = service.records.lookups["shard3"]
    await asyncio.to_thread(cluster.stop_shard, "shard3", "immediate")
    try:
        results = await asyncio.gather(
            *(service.records.find_on(["shard3"], [str(uuid.uuid4())]) for _ in range(5)), return_exceptions=True
        )
    finally:
        await asyncio.to_thread(cluster.start_shard, "shard3")
    assert all(isinstance(r, ShardUnavailable) and r.shard == "shard3" for r in results), results
    assert lookup.tasks and not any(task.done() for task in lookup.tasks), "the lookup worker survives"
    for attempt in range(50):  # the pool replaces connections the restart cut, as it meets them
        try:
            assert await service.records.find_on(["shard3"], [str(uuid.uuid4())]) == {}, (
                "and answers once the shard is back"
            )
            break
        except ShardUnavailable:
            assert attempt < 49, "the lookup never answered after the shard came back"
            await asyncio.sleep(0.2)


def test_account_rows_are_read_by_position_in_the_accounts_field_order() -> None:
    from core.domain.accounts import Account
    from shards.accounts import ACCOUNT_COLUMNS

    columns = [name.strip() for name in ACCOUNT_COLUMNS.split("#")[0].split(",")]
    assert columns == list(Account._fields)


def test_a_retry_is_the_same_request_when_it_moves_the_same_money() -> None:
    """The idempotency key promises the movement, not the protocol: a retry in another mode
    replays; any other field changed is another request (a conflict)."""
    transfer = Transfer(str(uuid.uuid4()), "transfer", "a", "b", 5, "USD", "2pc")
    assert transfer._replace(mode="tcc").movement == transfer.movement
    for changed in ({"amount": 6}, {"to_account": "c"}, {"from_account": "d"}, {"currency": "EUR"}):
        assert transfer._replace(**changed).movement != transfer.movement, changed


def test_transfers_are_in_the_records_column_order() -> None:
    """write_batch transposes the Transfer tuples straight into the record's columns."""
    import re

    from shards.transfers import WRITE_BATCH

    found = re.search(r"INSERT INTO transfers \(([^)]*)\)", WRITE_BATCH)
    assert found is not None, "WRITE_BATCH inserts into transfers"
    columns = [name.strip() for name in found[1].split(",")]
    assert columns[: len(Transfer._fields)] == list(Transfer._fields)


def test_balance_events_are_in_the_outboxs_column_order() -> None:
    """write_batch transposes the event tuples straight into the outbox's columns."""
    import re

    from core.domain.postings import BalanceEvent
    from shards.transfers import WRITE_BATCH

    found = re.search(r"INSERT INTO outbox \(([^)]*)\)", WRITE_BATCH)
    assert found is not None, "WRITE_BATCH inserts into the outbox"
    columns = found.group(1)
    assert [c.strip() for c in columns.split(",")] == list(BalanceEvent._fields)


def test_no_statement_compares_a_text_literal_array_in_a_where() -> None:
    """A literal array (shards/arrays.py) is unnested in FROM, cast once. In `= ANY(($1::text)::T[])`
    a generic plan over a sequential scan (planned while the table was small) casts it again
    for every row it reads: lookups grew with the table, to milliseconds each."""
    import importlib
    import pkgutil
    import re

    import shards

    offending = []
    for module_info in pkgutil.iter_modules(shards.__path__):
        module = importlib.import_module(f"shards.{module_info.name}")
        for name, value in vars(module).items():
            literal_in_where = isinstance(value, str) and re.search(r"ANY\s*\(\s*\(\s*\$\d+::text\s*\)", value)
            if literal_in_where and not name.startswith("__"):
                offending.append(f"shards.{module_info.name}.{name}")
    assert not offending, offending
