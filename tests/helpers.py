"""What the tests share: ids on a chosen shard, accounts opened and funded, tokens, money
read back, waiting, logs captured, and coordinators killed at a fault point. One module:
a test module never imports another."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import os
import random
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import asyncpg
import httpx

from coordinator.api.app import WalletApp, build_app
from coordinator.api.auth import issue_token
from coordinator.service.wallet import WalletService
from core.domain.errors import WalletError
from core.runtime.logs import JsonFormatter
from launchers.postgres import temporary_home as make_home
from shard_router.topology import Topology

REPOSITORY = Path(__file__).resolve().parent.parent
SHARDS = ("shard0", "shard1", "shard2", "shard3")
# The API's token secret in tests (HS256 needs at least 32 bytes).
TEST_SECRET = "wallet-tests-secret-0123456789abcdef-0123456789"

__all__ = ["make_home"]


def code_blocks(path: Path) -> list[tuple[str, str]]:
    """(language, text) of every fenced block of a Markdown page."""
    return re.findall(r"^```(\w*)\n(.*?)^```", path.read_text(), flags=re.M | re.S)


def bearer(owner: str = "admin", admin: bool = True) -> dict[str, str]:
    """Authorization headers for a token signed with the tests' secret."""
    return {"Authorization": f"Bearer {issue_token(TEST_SECRET, owner, 'admin' if admin else 'user')}"}


def accounts_on(topology: Topology, shard: str, count: int, prefix: str | None = None) -> list[str]:
    """`count` fresh account ids that route to `shard`."""
    return topology.ids_on(shard, count, prefix or uuid.uuid4().hex[:8])


async def open_accounts(
    service: WalletService, ids: list[str], currency: str = "USD", deposit: str | None = None
) -> None:
    for account_id in ids:
        await service.create_account(account_id, f"owner-{account_id}", currency)
        if deposit is not None:
            result = await service.deposit(account_id, deposit, str(uuid.uuid4()))
            assert result.status == "success"


async def send_all(
    service: WalletService, requests: list[tuple[str, str, int]], start: dict[str, int], mode: str | None = None
) -> tuple[list[str], dict[str, int]]:
    """Send every (source, target, cents) USD transfer at once. Returns each outcome (status or
    error code) and the balances implied by applying each reported success exactly once."""

    async def send(source: str, target: str, cents: int) -> str:
        try:
            result = await service.transfer(
                source, target, f"{cents // 100}.{cents % 100:02d}", "USD", str(uuid.uuid4()), mode=mode
            )
            return result.status
        except WalletError as error:
            return error.code

    outcomes = list(await asyncio.gather(*(send(*request) for request in requests)))
    expected = dict(start)
    for (source, target, cents), status in zip(requests, outcomes, strict=True):
        if status == "success":
            expected[source] -= cents
            expected[target] += cents
    return outcomes, expected


@contextlib.contextmanager
def batches_held(service: WalletService, shard: str) -> Iterator[asyncio.Event]:
    """Hold every group of `shard`'s one-shard transfers (rounds.py's hook) until the yielded
    event is set, so a test can look at transfers while they are in flight."""
    release = asyncio.Event()

    async def held(group: str, size: int) -> None:
        if group == shard:
            await release.wait()

    service.rounds.hooks.append(held)
    try:
        yield release
    finally:
        service.rounds.hooks.remove(held)
        release.set()


@contextlib.contextmanager
def captured_logs(level: int) -> Iterator[io.StringIO]:
    """The `wallet` loggers' lines, as JSON, at `level`, for the duration of the block."""
    captured = io.StringIO()
    handler = logging.StreamHandler(captured)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("wallet")
    logger.addHandler(handler)
    previous = logger.level
    logger.setLevel(level)
    try:
        yield captured
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)


def eventually(condition: Callable[[], bool], what: str, timeout_s: float, poll_s: float = 0.05) -> None:
    """Wait (blocking) until `condition()` holds; fail naming `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(poll_s)


async def fetch(topology: Topology, shard: str, query: str, *arguments: object) -> list[asyncpg.Record]:
    connection = await asyncpg.connect(topology.shards[shard])
    try:
        return await connection.fetch(query, *arguments)
    finally:
        await connection.close()


async def reserved_of(service: WalletService, ids: list[str]) -> int:
    return sum([(await service.get_account(a)).reserved for a in ids])


async def unfinished_phases(topology: Topology) -> int:
    """Unfinished TC/C or Saga transfers on every shard of the topology."""
    total = 0
    for shard in topology.shards:
        total += len(await fetch(topology, shard, "SELECT 1 FROM phase_state WHERE second_state <> 'done'"))
    return total


async def prepared_count(topology: Topology) -> int:
    total = 0
    for dsn in topology.shards.values():
        connection = await asyncpg.connect(dsn)
        try:
            total += await connection.fetchval("SELECT count(*) FROM pg_prepared_xacts WHERE gid LIKE 'wallet:%'")
        finally:
            await connection.close()
    return total


async def balances(service: WalletService, ids: list[str]) -> dict[str, int]:
    return {account_id: (await service.get_account(account_id)).balance for account_id in ids}


async def retry_until_known(service: WalletService, transfer: dict[str, str], attempts: int = 60) -> str:
    """What a client does with an unknown outcome: retry with the same transaction id."""
    for _ in range(attempts):
        try:
            result = await service.transfer(
                transfer["from"], transfer["to"], transfer["amount"], "USD", transfer["id"], transfer.get("mode")
            )
            return result.status
        except WalletError as error:
            if error.code != "shard_unavailable":
                return error.code
        await asyncio.sleep(0.5)
    raise AssertionError(f"transfer {transfer['id']} never got a definite answer")


def expected_after_all_once(start: dict[str, int], transfers: list[dict[str, str]]) -> dict[str, int]:
    expected = dict(start)
    for transfer in transfers:
        cents = int(transfer["amount"].replace(".", ""))
        expected[transfer["from"]] -= cents
        expected[transfer["to"]] += cents
    return expected


def sample(text: str, name: str, **labels: str) -> float:
    """One sample's value from the Prometheus text format (0 when absent)."""
    wanted = ",".join(f'{key}="{value}"' for key, value in labels.items())
    pattern = re.compile(
        rf"^{re.escape(name)}(\{{{re.escape(wanted)}\}})? ([0-9.e+-]+)$"
        if labels
        else rf"^{re.escape(name)} ([0-9.e+-]+)$",
        re.M,
    )
    found = pattern.search(text)
    return float(found.groups()[-1]) if found else 0.0


def assert_problem(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["code"] == code and body["status"] == status and body["detail"]
    assert "Traceback" not in response.text


async def assert_outbox_explains(topology: Topology, account_ids: list[str]) -> None:
    """For each account: events numbered 1..version with no gap or repeat, their amounts
    sum to the balance, their reserved deltas to reserved, the last one states both."""
    for account_id in account_ids:
        # An account that changed shard (a slot migration) left its earlier events in the
        # old shard's outbox: gather them from every shard.
        events: list[asyncpg.Record] = []
        account = None
        for shard, dsn in sorted(topology.shards.items()):
            connection = await asyncpg.connect(dsn)
            try:
                if shard == topology.shard_of(account_id):
                    account = await connection.fetchrow(
                        "SELECT balance, reserved, version, placement FROM accounts WHERE account_id = $1", account_id
                    )
                events.extend(
                    await connection.fetch(
                        "SELECT version, amount, reserved_delta, balance_after, reserved_after FROM outbox "
                        "WHERE account_id = $1",
                        account_id,
                    )
                )
            finally:
                await connection.close()
        assert account is not None and account["placement"] == "live", account_id
        events.sort(key=lambda event: event["version"])
        assert [e["version"] for e in events] == list(range(1, account["version"] + 1)), account_id
        assert sum(e["amount"] for e in events) == account["balance"], account_id
        assert sum(e["reserved_delta"] for e in events) == account["reserved"], account_id
        if events:
            assert (events[-1]["balance_after"], events[-1]["reserved_after"]) == (
                account["balance"],
                account["reserved"],
            )


def kill_at(topology_path: Path, transfers: list[dict[str, str]], fault_point: str, mode: str, workdir: Path) -> None:
    """Run a coordinator subprocess (tests/victim.py) over `transfers` until it SIGKILLs itself
    at `fault_point`."""
    plan = workdir / f"transfers-{fault_point}.json"
    plan.write_text(json.dumps(transfers))
    victim = subprocess.run(
        [sys.executable, "-m", "tests.victim", str(topology_path), str(plan), mode],
        cwd=REPOSITORY,
        env={**os.environ, "WALLET_FAULT_POINT": fault_point},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert victim.returncode == -signal.SIGKILL, f"the victim was not killed at {fault_point}: {victim.stderr}"


def cross_shard_transfers(topology: Topology, accounts: list[str], count: int, seed: object) -> list[dict[str, str]]:
    """`count` random transfers between accounts on different shards, each with a fresh id."""
    rng = random.Random(str(seed))
    transfers = []
    for _ in range(count):
        source, target = rng.sample(accounts, 2)
        while topology.shard_of(source) == topology.shard_of(target):
            source, target = rng.sample(accounts, 2)
        cents = rng.randint(1, 500)
        transfers.append(
            {"from": source, "to": target, "amount": f"{cents // 100}.{cents % 100:02d}", "id": str(uuid.uuid4())}
        )
    return transfers


# How the app reaches its service in the tests that run both ways: in its own process, or
# over the engine link, as `wallet serve`'s HTTP processes do (api/engine_link.py).
BACKENDS = ("local", "engine link")


@contextlib.asynccontextmanager
async def app_over(backend: str, settings, service: WalletService) -> AsyncIterator[WalletApp]:
    """The app over `service`, directly or through an engine link on a socket pair."""
    if backend == "local":
        yield build_app(settings, service=service)
        return
    import socket

    from coordinator.api.app import heads
    from coordinator.api.backend import LocalBackend
    from coordinator.api.engine_link import EngineServer, RemoteBackend
    from coordinator.api.metrics import Metrics

    engine_end, http_end = socket.socketpair()
    engine = EngineServer(LocalBackend(service, settings, Metrics(), heads()))
    engine.attach(engine_end)
    remote = await RemoteBackend(http_end, settings.default_mode).open()
    try:
        yield build_app(settings, backend=remote)
    finally:
        await remote.close()
        await engine.close()


Value = TypeVar("Value")


def settled_value(value: Value) -> asyncio.Future[Value]:
    """A future that already holds `value` (for a step that awaits what others read)."""
    future: asyncio.Future[Value] = asyncio.get_running_loop().create_future()
    future.set_result(value)
    return future
