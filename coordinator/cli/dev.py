"""`wallet dev up|down`: the local cluster of PostgreSQL shards (and the ledger's server)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from coordinator.api.auth import load_secret
from core.domain.errors import ConfigurationError
from core.runtime.settings import HA_MEMBERS_MAX, LOCAL_SHARDS_MAX, Settings
from ledger.anchors import load_signing_key

if TYPE_CHECKING:  # development tooling, imported when a command needs it (not by `wallet serve`)
    from launchers.patroni import HaCluster
    from launchers.postgres import LocalCluster

DEFAULT_SHARD_COUNT = 4


def shard_count(text: str) -> int:
    """--shards: 1..LOCAL_SHARDS_MAX."""
    if not text.isdigit() or not 1 <= int(text) <= LOCAL_SHARDS_MAX:
        raise argparse.ArgumentTypeError(f"must be a whole number in 1..{LOCAL_SHARDS_MAX}, got {text!r}")
    return int(text)


def start_local_cluster(settings: Settings, shards: int, ledgers: int | None = None) -> LocalCluster:
    """`ledgers` None: as many ledger servers as the home has (1 for a new one)."""
    from launchers.postgres import LocalCluster
    from shards import migrate

    cluster = LocalCluster(settings.home, shard_count=shards, ledgers=ledgers)
    if cluster.topology_path.resolve() != settings.topology_path.resolve():
        raise ConfigurationError(
            f"WALLET_TOPOLOGY ({settings.topology_path}) must be {cluster.topology_path} "
            "for a local cluster (or unset it)"
        )
    migrate.upgrade_all(cluster.start())
    keep_keys(settings)
    return cluster


def keep_keys(settings: Settings) -> None:
    """The token secret and the ledger's signing key, made once in the home: restarts keep
    issued tokens valid, and the relay signs a checkpoint of every stream from its first
    moment (tamper evidence on by default; `wallet ledger verify` checks against them)."""
    load_secret(settings, create=True)
    load_signing_key(settings.ledger_key_path, create=True)


def start_ha_cluster(settings: Settings, shards: int, replicas: int, ledgers: int = 1) -> HaCluster:
    """Every shard and each ledger server as a Patroni cluster of 1 + `replicas` servers on
    ZooKeeper: the one WALLET_ZK_HOSTS names (the topology's ensemble), else one started here."""
    from launchers.patroni import HaCluster
    from shards import migrate

    cluster = HaCluster(
        settings.home, shard_count=shards, members=1 + replicas, zk_hosts=settings.zk_hosts, ledgers=ledgers
    )
    if cluster.topology_path.resolve() != settings.topology_path.resolve():
        raise ConfigurationError(
            f"WALLET_TOPOLOGY ({settings.topology_path}) must be {cluster.topology_path} "
            "for a local cluster (or unset it)"
        )
    migrate.upgrade_all(cluster.start())
    keep_keys(settings)
    return cluster


def command_dev_up(args: argparse.Namespace, settings: Settings) -> int:
    if args.replicas:
        ha = start_ha_cluster(settings, args.shards, args.replicas, args.ledgers or 1)
        print(
            f"HA cluster running: {len(ha.names)} Patroni clusters of {ha.members} servers on ZooKeeper "
            f"{ha.zk_hosts}, topology {ha.topology_path}"
        )
        for name in ha.names:
            leader = ha.leader(name)
            print(f"  {name}: {ha.dsn(name)} (primary now {leader.name if leader else 'none'})")
        return 0
    cluster = start_local_cluster(settings, args.shards, args.ledgers)
    from launchers.postgres import is_ledger

    ledgers = sum(1 for server in cluster.servers if is_ledger(server.name))
    print(
        f"local cluster running: {len(cluster.servers) - ledgers} shards and {ledgers} ledger "
        f"server{'s' if ledgers > 1 else ''}, topology {cluster.topology_path}"
    )
    for server in cluster.servers:
        print(f"  {server.name}: {server.dsn}")
    return 0


def command_dev_down(args: argparse.Namespace, settings: Settings) -> int:
    from launchers.patroni import HaCluster
    from launchers.postgres import LocalCluster

    if HaCluster.exists(settings.home):
        HaCluster(settings.home, zk_hosts=settings.zk_hosts).stop()  # what it runs is in its state file
        print("HA cluster stopped")
        return 0
    LocalCluster(settings.home, shard_count=args.shards).stop()
    print("local cluster stopped")
    return 0


def replica_count(text: str) -> int:
    """--replicas: standbys per shard, 0 (one server, the embedded default) to 4."""
    if not text.isdigit() or not 0 <= int(text) <= HA_MEMBERS_MAX - 1:
        raise argparse.ArgumentTypeError(f"must be a whole number in 0..{HA_MEMBERS_MAX - 1}, got {text!r}")
    return int(text)


def ledger_count(text: str) -> int:
    """--ledgers: 1..LEDGERS_MAX ledger servers (partitions)."""
    from launchers.postgres import LEDGERS_MAX

    if not text.isdigit() or not 1 <= int(text) <= LEDGERS_MAX:
        raise argparse.ArgumentTypeError(f"must be a whole number in 1..{LEDGERS_MAX}, got {text!r}")
    return int(text)


def add_commands(commands: Any) -> None:
    dev = commands.add_parser("dev", help="a local cluster of PostgreSQL shards for development")
    dev_commands = dev.add_subparsers(dest="dev_command", required=True, metavar="ACTION")
    up = dev_commands.add_parser("up", help="start (or restart) the local shards under WALLET_HOME and migrate them")
    up.add_argument("--shards", type=shard_count, default=DEFAULT_SHARD_COUNT, help="number of shards (default 4)")
    up.add_argument(
        "--replicas",
        type=replica_count,
        default=0,
        help="synchronous standbys per shard and for the ledger, each cluster run by Patroni on "
        "ZooKeeper (default 0: one server each)",
    )
    up.add_argument(
        "--ledgers",
        type=ledger_count,
        default=None,
        help="ledger servers, each holding some shards' event streams (default: as many as the home has, "
        "1 for a new one)",
    )
    up.set_defaults(handler=command_dev_up)
    down = dev_commands.add_parser("down", help="stop the local shards (data is kept)")
    down.add_argument("--shards", type=shard_count, default=DEFAULT_SHARD_COUNT, help=argparse.SUPPRESS)
    down.set_defaults(handler=command_dev_down)
