"""`wallet topology ...`: the topology as operators and DBAs change it (file or ZooKeeper).

show                          the stored document
init --from FILE              store a topology document (first install, or file -> ZooKeeper)
set-shard NAME DSN            add a shard (owning no slots) or give one a new address
move-slot SLOT|FIRST-LAST SHARD  move slots online (coordinator/cluster/slot_migration.py)
pin ACCOUNT SHARD             place a not-yet-created account on a shard (the directory)
set-ledger NAME DSN           add a ledger server (holding no streams yet) or give one a new address
move-stream STREAM LEDGER     move a shard's event stream to another ledger server online (ledger/streams.py)
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import Any

from coordinator.cluster.coordination import open_topology_store
from coordinator.cluster.slot_migration import MigrationError, move_slot, slots_in
from core.runtime.settings import Settings
from ledger.streams import MoveReport, move_stream
from shard_router.stores import TopologyStore
from shard_router.topology import Topology, TopologyError
from shards import accounts as account_sql
from shards.pool import ShardPools

# One command moves at most this many slots (a whole ring); each is its own move.
MOVE_SLOTS_PER_CALL_MAX = 4096


def with_store(settings: Settings, action: Any) -> Any:
    store = open_topology_store(settings)
    try:
        return action(store)
    finally:
        store.close()


def command_show(args: argparse.Namespace, settings: Settings) -> int:
    topology = with_store(settings, lambda store: store.load())
    print(json.dumps(topology.to_document(), indent=2))
    return 0


def command_init(args: argparse.Namespace, settings: Settings) -> int:
    try:
        document = json.loads(Path(args.source).read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise TopologyError(f"cannot read a topology document from {args.source}: {error}") from error
    topology = Topology.from_document(document)

    def save(store: TopologyStore) -> None:
        if store.exists() and not args.force:
            current = store.load()
            if current != topology:
                raise TopologyError(
                    f"a topology (version {current.version}) is already stored; pass --force to replace "
                    "it with a newer version"
                )
        store.save(topology)

    with_store(settings, save)
    print(f"topology version {topology.version} stored: {len(topology.shards)} shards")
    return 0


def command_set_shard(args: argparse.Namespace, settings: Settings) -> int:
    def change(store: TopologyStore) -> Topology:
        current = store.load()
        changed = current.with_shard(args.name, args.dsn)
        store.save(changed)
        return changed

    changed = with_store(settings, change)
    owned = len(changed.slots_of(args.name))
    print(f"topology version {changed.version}: shard {args.name} at {args.dsn}, owning {owned} slots")
    if not owned:
        print(f"next: wallet db upgrade --shard {args.name}, then wallet topology move-slot FIRST-LAST {args.name}")
    return 0


def command_move_slot(args: argparse.Namespace, settings: Settings) -> int:
    async def run() -> None:
        slots = slots_in(args.slots)
        assert len(slots) <= MOVE_SLOTS_PER_CALL_MAX
        store = await asyncio.to_thread(open_topology_store, settings)
        try:
            topology = await asyncio.to_thread(store.load)
            pools = ShardPools(topology.shards, size_max=4)
            await pools.open()
            try:
                for slot in slots:
                    report = await move_slot(store, pools, slot, args.target)
                    resumed = f" (resumed after {report.resumed})" if report.resumed else ""
                    print(
                        f"slot {slot}: {report.source} -> {report.target}, {report.moved} accounts, "
                        f"topology version {report.version}{resumed}",
                        flush=True,
                    )
            finally:
                await pools.close()
        finally:
            await asyncio.to_thread(store.close)

    try:
        asyncio.run(run())
    except MigrationError as error:
        raise TopologyError(str(error)) from error
    return 0


def command_set_ledger(args: argparse.Namespace, settings: Settings) -> int:
    def change(store: TopologyStore) -> Topology:
        changed = store.load().with_ledger_server(args.name, args.dsn)
        store.save(changed)
        return changed

    changed = with_store(settings, change)
    held = changed.ledgers[args.name].streams
    print(
        f"topology version {changed.version}: ledger {args.name} at {args.dsn}, holding "
        + (", ".join(held) if held else "no streams yet")
    )
    if not held:
        print(f"next: wallet db upgrade --all, then wallet topology move-stream STREAM {args.name}")
    return 0


def command_move_stream(args: argparse.Namespace, settings: Settings) -> int:
    async def run() -> MoveReport:
        store = await asyncio.to_thread(open_topology_store, settings)
        try:
            return await move_stream(store, args.stream, args.ledger)
        finally:
            await asyncio.to_thread(store.close)

    report = asyncio.run(run())
    if report.outcome in ("moved", "resumed"):
        print(
            f"stream {report.stream}: ledger {report.source} -> {report.target}, {report.copied} events copied, "
            f"topology version {report.version}" + (" (resumed)" if report.outcome == "resumed" else "")
        )
    elif report.outcome == "rolled back":
        print(f"stream {report.stream}: the interrupted move rolled back; it is live on ledger {report.target}")
    elif report.outcome == "finished":
        print(f"stream {report.stream}: the interrupted move finished; it is live on ledger {report.target}")
    else:
        print(f"stream {report.stream} is already on ledger {report.target}")
    return 0


def command_pin(args: argparse.Namespace, settings: Settings) -> int:
    async def exists_anywhere(topology: Topology) -> list[str]:
        pools = ShardPools(topology.shards, size_max=1)
        await pools.open()
        try:
            found = []
            for shard in sorted(topology.shards):
                async with pools.connection(shard) as connection:
                    if await account_sql.account_exists(connection, args.account_id):
                        found.append(shard)
            return found
        finally:
            await pools.close()

    def change(store: TopologyStore) -> Topology:
        current = store.load()
        if args.shard not in current.shards:
            raise TopologyError(f"no shard {args.shard!r} in the topology; it has {sorted(current.shards)}")
        found = asyncio.run(exists_anywhere(current))
        if found:
            raise TopologyError(
                f"account {args.account_id} already exists on {', '.join(found)}: pins place new "
                "accounts only (move its slot instead)"
            )
        overrides = {**current.overrides, args.account_id: args.shard}
        changed = Topology(current.version + 1, current.shards, current.slots, overrides, current.ledgers)
        store.save(changed)
        return changed

    changed = with_store(settings, change)
    print(f"topology version {changed.version}: {args.account_id} pinned to {args.shard}")
    return 0


def add_commands(commands: Any) -> None:
    topology = commands.add_parser(
        "topology",
        help="the shard map: show, init, set-shard, move-slot, pin, set-ledger, move-stream "
        "(ZooKeeper when WALLET_ZK_HOSTS is set, else the topology file)",
    )
    sub = topology.add_subparsers(dest="topology_command", required=True)
    sub.add_parser("show", help="print the stored topology document").set_defaults(handler=command_show)
    init = sub.add_parser("init", help="store a topology document (e.g. copy the file into ZooKeeper)")
    init.add_argument("--from", dest="source", required=True, help="a topology JSON file")
    init.add_argument("--force", action="store_true", help="replace a stored topology (the new version must be newer)")
    init.set_defaults(handler=command_init)
    set_shard = sub.add_parser("set-shard", help="add a shard (owning no slots yet) or change a shard's address")
    set_shard.add_argument("name")
    set_shard.add_argument("dsn")
    set_shard.set_defaults(handler=command_set_shard)
    move = sub.add_parser("move-slot", help="move slots to a shard online (copy, flip, route)")
    move.add_argument("slots", help="a slot N or a range FIRST-LAST")
    move.add_argument("target", help="the shard that will own them")
    move.set_defaults(handler=command_move_slot)
    pin = sub.add_parser("pin", help="place a new account on a shard whatever its slot (the directory)")
    pin.add_argument("account_id")
    pin.add_argument("shard")
    pin.set_defaults(handler=command_pin)
    set_ledger = sub.add_parser(
        "set-ledger", help="add a ledger server (holding no streams yet) or change a ledger server's address"
    )
    set_ledger.add_argument("name")
    set_ledger.add_argument("dsn")
    set_ledger.set_defaults(handler=command_set_ledger)
    move_stream_parser = sub.add_parser(
        "move-stream",
        help="move a shard's event stream to another ledger server online (fence, copy, route); "
        "rerun to finish an interrupted move, or name the old server to roll it back",
    )
    move_stream_parser.add_argument("stream", help="a shard's name: its events")
    move_stream_parser.add_argument("ledger", help="the ledger server that will hold them")
    move_stream_parser.set_defaults(handler=command_move_stream)
