"""`wallet`: the command line for developers, operators and DBAs."""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import uuid
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable

import asyncpg

from coordinator.auth import SCOPES, TOKEN_TTL_S_DEFAULT, TOKEN_TTL_S_MAX, issue_token, load_secret, secret_path
from coordinator import event_loop
from coordinator.config import Settings
from coordinator.coordination import open_topology_store
from coordinator.topology_cli import add_topology_commands
from coordinator.validation import check_moment, check_owner
from coordinator.money import format_amount
from ledger.service import LedgerService
from coordinator.errors import WalletError
from coordinator.service import WalletService
from shard_router.topology import Topology, TopologyError
from shards.errors import ShardError

DEFAULT_SHARD_COUNT = 4


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, default=str))


def load_topology(settings: Settings) -> Topology:
    store = open_topology_store(settings)
    try:
        return store.load()
    finally:
        store.close()


def with_service(settings: Settings, action: Callable[[WalletService], Awaitable[Any]]) -> Any:
    async def run() -> Any:
        store = await asyncio.to_thread(open_topology_store, settings)
        try:
            topology = await asyncio.to_thread(store.load)
            async with WalletService(topology, settings, store) as service:
                return await action(service)
        finally:
            await asyncio.to_thread(store.close)

    return event_loop.run(run())


# -- dev ----------------------------------------------------------------------------------
def start_local_cluster(settings: Settings, shards: int) -> Any:
    from shards import migrate
    from shards.cluster import LocalCluster

    cluster = LocalCluster(settings.home, shard_count=shards)
    if cluster.topology_path.resolve() != settings.topology_path.resolve():
        raise SystemExit(f"WALLET_TOPOLOGY ({settings.topology_path}) must be {cluster.topology_path} for a local cluster")
    topology = cluster.start()
    migrate.upgrade_all(topology)
    load_secret(settings, create=True)  # kept in the home: restarts keep issued tokens valid
    return cluster


def command_dev_up(args: argparse.Namespace, settings: Settings) -> int:
    cluster = start_local_cluster(settings, args.shards)
    print(f"local cluster running: {len(cluster.servers)} shards, topology {cluster.topology_path}")
    for server in cluster.servers:
        print(f"  {server.name}: {server.dsn}")
    return 0


def command_dev_down(args: argparse.Namespace, settings: Settings) -> int:
    from shards.cluster import LocalCluster

    LocalCluster(settings.home, shard_count=args.shards).stop()
    print("local cluster stopped")
    return 0


# -- serve --------------------------------------------------------------------------------
def command_serve(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from coordinator.app import build_app

    from coordinator.logs import configure_logging

    configure_logging(settings.log_format, settings.log_level)
    cluster = start_local_cluster(settings, args.shards) if args.local else None
    try:
        host, port = args.host or settings.host, args.port or settings.port
        print(f"serving the wallet API on http://{host}:{port} (Ctrl-C stops)", flush=True)
        if args.local:
            token = issue_token(load_secret(settings, create=True) or "", "admin", "admin")
            print(f"admin token (valid {TOKEN_TTL_S_DEFAULT // 86400} days): {token}\n"
                  f"  curl -H 'Authorization: Bearer {token}' http://{host}:{port}/v1/accounts/alice", flush=True)
        workers = args.workers or settings.workers
        if workers == 1:
            uvicorn.run(build_app(settings), host=host, port=port, log_level="warning", lifespan="on")
        else:  # processes sharing the port; each builds its app (and settings) from the environment
            os.environ["WALLET_WORKERS"] = str(workers)
            uvicorn.run("coordinator.app:build_app", factory=True, workers=workers, host=host, port=port,
                        log_level="warning", lifespan="on")
    finally:
        if cluster is not None:
            cluster.stop()
            print("local cluster stopped", flush=True)
    return 0


# -- tokens -------------------------------------------------------------------------------
def command_token_issue(args: argparse.Namespace, settings: Settings) -> int:
    """HS256 with the deployment's secret, or, given --private-key, an asymmetric token."""
    scope = "admin" if args.admin else "user"
    check_owner(args.owner)
    ttl_s = int(args.ttl_hours * 3600)
    if not 0 < ttl_s <= TOKEN_TTL_S_MAX:
        raise SystemExit(f"--ttl-hours must be in (0, {TOKEN_TTL_S_MAX // 3600}]")
    if args.private_key:
        key = open(args.private_key).read()
        token = issue_token(key, args.owner, scope, ttl_s, algorithm=args.algorithm)
    else:
        secret = load_secret(settings)
        if secret is None:
            raise SystemExit(f"no token secret: set WALLET_AUTH_SECRET or run `wallet dev up` "
                             f"(it keeps one in {secret_path(settings.home)})")
        token = issue_token(secret, args.owner, scope, ttl_s)
    print(token)
    return 0


# -- db -----------------------------------------------------------------------------------
def command_db_upgrade(args: argparse.Namespace, settings: Settings) -> int:
    from shards import migrate

    topology = load_topology(settings)
    if args.all == (args.shard is not None):
        raise SystemExit("choose --all or --shard NAME")
    databases = dict(topology.shards)
    if topology.ledger:
        databases["ledger"] = topology.ledger
    names = sorted(databases) if args.all else [args.shard]
    for name in names:
        if name not in databases:
            raise SystemExit(f"no shard {name!r} in the topology; it has {sorted(databases)}")
        if name == "ledger":
            migrate.upgrade(databases[name], args.revision, target="ledger")
        else:
            migrate.upgrade_shard(topology, name, args.revision)
        print(f"{name}: upgraded to {args.revision}")
    return 0


def command_db_current(args: argparse.Namespace, settings: Settings) -> int:
    from shards import migrate

    topology = load_topology(settings)
    head = migrate.head_revision()

    async def read_all() -> list[migrate.ShardRevision]:
        reads = [migrate.read_revision(name, topology.shards[name]) for name in sorted(topology.shards)]
        if topology.ledger:
            reads.append(migrate.read_revision("ledger", topology.ledger, target="ledger"))
        return await asyncio.gather(*reads)

    revisions = asyncio.run(read_all())
    drift = False
    for revision in revisions:
        if revision.error:
            state = revision.error
        elif revision.revision is None:
            state = "not migrated"
        elif revision.current:
            state = "head"
        else:
            state = "behind head"
        drift |= not revision.current
        print(f"{revision.shard}\t{revision.revision or '-'}\t{state}")
    print(f"head: {head}" + (f" (ledger {migrate.head_revision('ledger')})" if topology.ledger else "")
          + ("  DRIFT: shards differ from head" if drift else "  all shards at head"))
    return 1 if drift else 0


# -- accounts and money -------------------------------------------------------------------
def command_accounts_create(args: argparse.Namespace, settings: Settings) -> int:
    account, created = with_service(settings, lambda s: s.create_account(args.account_id, args.owner, args.currency))
    print_json({**account.to_json(), "created": created})
    return 0


def command_accounts_show(args: argparse.Namespace, settings: Settings) -> int:
    print_json(with_service(settings, lambda s: s.get_account(args.account_id)).to_json())
    return 0


def command_accounts_freeze(args: argparse.Namespace, settings: Settings) -> int:
    status = "active" if args.unfreeze else "frozen"
    print_json(with_service(settings, lambda s: s.set_account_status(args.account_id, status)).to_json())
    return 0


def command_deposit(args: argparse.Namespace, settings: Settings) -> int:
    result = with_service(settings, lambda s: s.deposit(args.account_id, args.amount, args.transaction_id))
    print_json(result.to_json())
    return 0 if result.status == "success" else 1


def command_transfer(args: argparse.Namespace, settings: Settings) -> int:
    result = with_service(
        settings,
        lambda s: s.transfer(args.from_account, args.to_account, args.amount, args.currency, args.transaction_id, args.mode),
    )
    print_json(result.to_json())
    return 0 if result.status == "success" else 1


def command_transfer_show(args: argparse.Namespace, settings: Settings) -> int:
    print_json(with_service(settings, lambda s: s.get_transfer(args.transaction_id)).to_json())
    return 0


def command_recover(args: argparse.Namespace, settings: Settings) -> int:
    report = with_service(settings, lambda s: s.recover(abort_after_ms=int(args.abort_after_s * 1000)))
    print(f"committed {report.committed}, rolled back {report.rolled_back}, "
          f"waiting {report.waiting} (younger than {args.abort_after_s}s), "
          f"resumed {report.resumed} TC/C or Saga transfers, errors {len(report.errors)}")
    for error in report.errors:
        print(f"  {error}")
    return 0 if not report.errors else 1


def ledger_of(service: WalletService) -> LedgerService:
    if service.ledger is None:
        raise SystemExit("the topology names no ledger database")
    return service.ledger


def command_ledger_relay(args: argparse.Namespace, settings: Settings) -> int:
    if args.follow:
        return follow_relay(settings)
    moved = with_service(settings, lambda s: ledger_of(s).drain())
    print(f"relayed {moved} outbox rows into the ledger")
    return 0


def follow_relay(settings: Settings) -> int:
    """The relay as its own process (coordinators then run with WALLET_RELAY=off)."""
    from coordinator.logs import configure_logging
    from ledger.relay import relay_worker

    configure_logging(settings.log_format, settings.log_level)

    async def run() -> None:
        async with WalletService(load_topology(settings), settings) as service:
            ledger = ledger_of(service)
            assert ledger.relay is not None, "the ledger service opens its relay"
            worker = relay_worker(ledger.relay)
            worker.start()
            try:
                await asyncio.Event().wait()  # until Ctrl-C or SIGTERM
            finally:
                await worker.stop()

    try:
        event_loop.run(run())
    except KeyboardInterrupt:
        pass
    return 0


def command_ledger_verify(args: argparse.Namespace, settings: Settings) -> int:
    breaks = with_service(settings, lambda s: ledger_of(s).verify())
    for found in breaks:
        print(f"BROKEN: {found}")
    print("hash chain intact" if not breaks else f"{len(breaks)} events do not chain")
    return 0 if not breaks else 1


def command_ledger_replay(args: argparse.Namespace, settings: Settings) -> int:
    at = check_moment(args.at, "--at") if args.at else datetime.now(timezone.utc)
    replay = with_service(settings, lambda s: ledger_of(s).replay(at, args.account))
    print(f"balances at {at.isoformat()} (from snapshot {replay.snapshot_id or 'none'})")
    for balance in replay.balances.values():
        print(f"{balance.account_id}\t{format_amount(balance.balance, balance.currency)} {balance.currency}"
              f"\treserved {format_amount(balance.reserved, balance.currency)}\tversion {balance.version}")
    return 0


def command_ledger_snapshot(args: argparse.Namespace, settings: Settings) -> int:
    at = check_moment(args.at, "--at") if args.at else datetime.now(timezone.utc)

    async def take(service: WalletService) -> int:
        await ledger_of(service).drain()
        return await ledger_of(service).snapshot(at)

    print(f"snapshot {with_service(settings, take)} of balances at {at.isoformat()}")
    return 0


def command_ledger_audit(args: argparse.Namespace, settings: Settings) -> int:
    report = with_service(settings, lambda s: ledger_of(s).audit())
    for found in report.breaks:
        print(f"BROKEN CHAIN: {found}")
    for difference in report.differences:
        print(f"DIFFERENCE {difference.account_id} on {difference.shard}: ledger says {difference.expected}, "
              f"live is {difference.actual} (balance, reserved, version): {difference.explanation}; "
              f"transactions {', '.join(str(t) for t in difference.transactions) or '-'}")
    for lag in report.lagging:
        print(f"lag {lag.account_id}: {lag.explanation}: {', '.join(str(t) for t in lag.transactions)}")
    for shard, (events, oldest_ms) in sorted(report.outbox_lag.items()):
        print(f"outbox {shard}: {events} events waiting, oldest {oldest_ms} ms")
    print(f"audited {report.accounts} accounts: " + ("clean" if report.clean else
          f"{len(report.differences)} differences, {len(report.breaks)} chain breaks"))
    return 0 if report.clean else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wallet",
        description="Wallet-to-wallet money transfers over sharded PostgreSQL. "
        "Settings come from WALLET_HOME (default .wallet) and WALLET_TOPOLOGY (default $WALLET_HOME/topology.json).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    dev = commands.add_parser("dev", help="a local cluster of PostgreSQL shards for development")
    dev_commands = dev.add_subparsers(dest="dev_command", required=True, metavar="ACTION")
    up = dev_commands.add_parser("up", help="start (or restart) the local shards under WALLET_HOME and migrate them")
    up.add_argument("--shards", type=int, default=DEFAULT_SHARD_COUNT, help="number of shards (default 4)")
    up.set_defaults(handler=command_dev_up)
    down = dev_commands.add_parser("down", help="stop the local shards (data is kept)")
    down.add_argument("--shards", type=int, default=DEFAULT_SHARD_COUNT, help=argparse.SUPPRESS)
    down.set_defaults(handler=command_dev_down)

    serve = commands.add_parser("serve", help="serve the REST API")
    serve.add_argument("--local", action="store_true", help="also start the local cluster, migrate it, and stop it on exit")
    serve.add_argument("--shards", type=int, default=DEFAULT_SHARD_COUNT, help="shards for --local (default 4)")
    serve.add_argument("--host", help="listen address (default WALLET_HOST or 127.0.0.1)")
    serve.add_argument("--port", type=int, help="listen port (default WALLET_PORT or 8000)")
    serve.add_argument("--workers", type=int, help="coordinator processes sharing the port (default WALLET_WORKERS or 1); "
                       "one of them runs recovery and the relay")
    serve.set_defaults(handler=command_serve)

    token = commands.add_parser("token", help="bearer tokens for the API")
    token_commands = token.add_subparsers(dest="token_command", required=True, metavar="ACTION")
    issue = token_commands.add_parser("issue", help="print a signed token for an owner (scope user, or --admin)")
    issue.add_argument("--owner", required=True, help="the owner the token acts for (as on its accounts)")
    issue.add_argument("--admin", action="store_true", help=f"scope admin (default user); scopes: {', '.join(SCOPES)}")
    issue.add_argument("--ttl-hours", type=float, default=TOKEN_TTL_S_DEFAULT / 3600, help="lifetime (default 30 days)")
    issue.add_argument("--private-key", help="sign with this PEM private key (asymmetric; the API then needs "
                       "WALLET_AUTH_PUBLIC_KEY_FILE)")
    issue.add_argument("--algorithm", default="RS256", choices=["RS256", "ES256", "EdDSA"],
                       help="with --private-key (default RS256)")
    issue.set_defaults(handler=command_token_issue)

    db = commands.add_parser("db", help="per-shard schema migrations (alembic)")
    db_commands = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    upgrade = db_commands.add_parser(
        "upgrade", help="migrate one shard (or the ledger: --shard ledger) or every database of the topology")
    upgrade.add_argument("--all", action="store_true", help="every shard in the topology")
    upgrade.add_argument("--shard", help="one shard by name")
    upgrade.add_argument("--revision", default="head", help="target revision (default head)")
    upgrade.set_defaults(handler=command_db_upgrade)
    current = db_commands.add_parser("current", help="each shard's revision; exit 1 if any differs from head")
    current.set_defaults(handler=command_db_current)

    accounts = commands.add_parser("accounts", help="create and inspect accounts")
    account_commands = accounts.add_subparsers(dest="accounts_command", required=True, metavar="ACTION")
    create = account_commands.add_parser("create", help="open an account")
    create.add_argument("account_id")
    create.add_argument("--owner", required=True)
    create.add_argument("--currency", required=True, help="ISO 4217 code, e.g. USD")
    create.set_defaults(handler=command_accounts_create)
    show = account_commands.add_parser("show", help="an account's balance, available and reserved funds, status")
    show.add_argument("account_id")
    show.set_defaults(handler=command_accounts_show)
    freeze = account_commands.add_parser("freeze", help="freeze an account (no money in or out)")
    freeze.add_argument("account_id")
    freeze.add_argument("--unfreeze", action="store_true", help="make it active again")
    freeze.set_defaults(handler=command_accounts_freeze)

    deposit = commands.add_parser("deposit", help="money enters an account from outside (idempotent)")
    deposit.add_argument("account_id")
    deposit.add_argument("amount", help="decimal string in the account's currency, e.g. 10.00")
    deposit.add_argument("--transaction-id", default=None, help="UUID idempotency key (default: a new one)")
    deposit.set_defaults(handler=command_deposit)

    transfer = commands.add_parser("transfer", help="move money between two accounts (idempotent)")
    transfer.add_argument("from_account")
    transfer.add_argument("to_account")
    transfer.add_argument("amount", help="decimal string, e.g. 10.00")
    transfer.add_argument("--currency", required=True)
    transfer.add_argument("--mode", choices=["2pc", "tcc", "saga"], help="cross-shard protocol (default WALLET_MODE)")
    transfer.add_argument("--transaction-id", default=None, help="UUID idempotency key (default: a new one)")
    transfer.set_defaults(handler=command_transfer)
    transfer_show = commands.add_parser("show-transfer", help="a transfer's status by transaction id")
    transfer_show.add_argument("transaction_id")
    transfer_show.set_defaults(handler=command_transfer_show)
    recover = commands.add_parser(
        "recover", help="finish in-doubt two-phase transfers once (`wallet serve` also does it in the background)"
    )
    recover.add_argument("--abort-after-s", type=float, default=10.0,
                         help="roll back undecided prepared transactions older than this (default 10)")
    recover.set_defaults(handler=command_recover)

    commands.add_parser("bench", help="the benchmark with its baselines (pgbench, unbatched), measured in one run; "
                        "`wallet bench --help` for its options", add_help=False)
    commands.add_parser("chaos", help="the bank workload under faults (kills, pauses, a faulty proxy) and its "
                        "checker; `wallet chaos --minutes N --seed S`, `wallet chaos --help`", add_help=False)
    ledger = commands.add_parser("ledger", help="the hash-chained event ledger: relay, verify, replay, snapshot, audit")
    ledger_commands = ledger.add_subparsers(dest="ledger_command", required=True, metavar="ACTION")
    relay = ledger_commands.add_parser("relay", help="copy every outbox row into the ledger now "
                                       "(serve does it continuously, unless WALLET_RELAY=off)")
    relay.add_argument("--follow", action="store_true", help="keep relaying until stopped (a relay process)")
    relay.set_defaults(handler=command_ledger_relay)
    ledger_commands.add_parser("verify", help="check every stream's hash chain; name any edited, removed or reordered event"
                               ).set_defaults(handler=command_ledger_verify)
    replay = ledger_commands.add_parser("replay", help="rebuild balances from the ledger at a moment")
    replay.add_argument("--at", help="ISO 8601 time with timezone (default: now)")
    replay.add_argument("--account", help="one account only")
    replay.set_defaults(handler=command_ledger_replay)
    snapshot = ledger_commands.add_parser("snapshot", help="store every balance at a moment; replays start from it")
    snapshot.add_argument("--at", help="ISO 8601 time with timezone (default: now)")
    snapshot.set_defaults(handler=command_ledger_snapshot)
    ledger_commands.add_parser("audit", help="compare live balances with the ledger replay; exit 1 on any difference"
                               ).set_defaults(handler=command_ledger_audit)
    add_topology_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:2] == ["bench", "ledger"]:
        from bench.ledger_replay import main as bench_ledger

        return bench_ledger(argv[2:])
    if argv[:1] == ["bench"]:  # its own parser: many knobs, no service settings
        from bench.run import main as bench

        return bench(argv[1:])
    if argv[:1] == ["chaos"]:  # its own parser and its own throwaway cluster
        from chaos.runner import main as chaos

        return chaos(argv[1:])
    args = build_parser().parse_args(argv)
    if getattr(args, "transaction_id", "unset") is None:
        args.transaction_id = str(uuid.uuid4())
    settings = Settings.from_environment()
    try:
        return args.handler(args, settings)
    except WalletError as error:
        print(f"error: {error.code}: {error.detail}", file=sys.stderr)
        return 2
    except (TopologyError, ShardError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except asyncpg.UndefinedTableError as error:
        print(f"error: a shard is not migrated ({error}); run `wallet db upgrade --all`", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
