"""Fixtures that start real PostgreSQL shards on loopback, migrate them, and stop them."""
from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import shutil
import time
import uuid
from typing import AsyncIterator, Callable, Iterator

import pytest

from coordinator.runtime.settings import Settings
from coordinator.service.wallet import WalletService
from shard_router.topology import Topology
from shards import migrate
from launchers.postgres import LocalCluster, temporary_home as make_home


@pytest.fixture(scope="session")
def cluster() -> Iterator[LocalCluster]:
    home = make_home("shards")
    local = LocalCluster(home, shard_count=4)
    try:
        topology = local.start()
        assert topology.ledger
        migrate.upgrade_all(topology)
        yield local
    finally:
        local.stop()
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def topology(cluster: LocalCluster) -> Topology:
    return cluster.topology


# The API's token secret in tests (HS256 needs at least 32 bytes).
TEST_SECRET = "wallet-tests-secret-0123456789abcdef-0123456789"


def bearer(owner: str = "admin", admin: bool = True) -> dict[str, str]:
    """Authorization headers for a token signed with the tests' secret."""
    from coordinator.api.auth import issue_token

    return {"Authorization": f"Bearer {issue_token(TEST_SECRET, owner, 'admin' if admin else 'user')}"}


@pytest.fixture
def settings(cluster: LocalCluster) -> Settings:
    return Settings(home=cluster.home, topology_path=cluster.topology_path, auth_secret=TEST_SECRET)


@pytest.fixture
async def service(topology: Topology, settings: Settings) -> AsyncIterator[WalletService]:
    async with WalletService(topology, settings) as opened:
        yield opened


def accounts_on(topology: Topology, shard: str, count: int, prefix: str | None = None) -> list[str]:
    """`count` fresh account ids that route to `shard`."""
    return topology.ids_on(shard, count, prefix or uuid.uuid4().hex[:8])


async def open_accounts(service: WalletService, ids: list[str], currency: str = "USD", deposit: str | None = None) -> None:
    for account_id in ids:
        await service.create_account(account_id, f"owner-{account_id}", currency)
        if deposit is not None:
            result = await service.deposit(account_id, deposit, str(uuid.uuid4()))
            assert result.status == "success"


async def send_all(service: WalletService, requests: list[tuple[str, str, int]], start: dict[str, int],
                   mode: str | None = None) -> tuple[list[str], dict[str, int]]:
    """Send every (source, target, cents) USD transfer at once. Returns each outcome (status or
    error code) and the balances implied by applying each reported success exactly once."""
    from coordinator.domain.errors import WalletError

    async def send(source: str, target: str, cents: int) -> str:
        try:
            result = await service.transfer(source, target, f"{cents // 100}.{cents % 100:02d}", "USD",
                                            str(uuid.uuid4()), mode=mode)
            return result.status
        except WalletError as error:
            return error.code

    outcomes = list(await asyncio.gather(*(send(*request) for request in requests)))
    expected = dict(start)
    for (source, target, cents), status in zip(requests, outcomes):
        if status == "success":
            expected[source] -= cents
            expected[target] += cents
    return outcomes, expected


@pytest.fixture(scope="session")
def zookeeper() -> Iterator[str]:
    """A real standalone ZooKeeper server for the session: its hosts string."""
    from launchers.zookeeper import LocalZooKeeper

    server = LocalZooKeeper(make_home("zookeeper"))
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture
def zk_root() -> str:
    """A fresh root znode per test, so tests sharing the server do not see each other."""
    return f"/wallet-test-{uuid.uuid4().hex[:12]}"


@contextlib.contextmanager
def batches_held(service: WalletService, shard: str) -> Iterator[asyncio.Event]:
    """Hold every batch of `shard`'s one-shard applier until the yielded event is set, so a
    test can look at transfers while they are in flight."""
    release = asyncio.Event()
    applier = service.appliers.local[shard]
    original = applier.apply_batch

    async def held(batch):  # type: ignore[no-untyped-def]
        await release.wait()
        return await original(batch)

    applier.apply_batch = held
    try:
        yield release
    finally:
        applier.apply_batch = original


@contextlib.contextmanager
def captured_logs(level: int) -> Iterator[io.StringIO]:
    """The `wallet` loggers' lines, as JSON, at `level`, for the duration of the block."""
    from coordinator.runtime.logs import JsonFormatter

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
