"""Leader election for the singletons (recovery worker, ledger relay) over a real ZooKeeper:
two `wallet serve` processes elect one; when the leader is SIGKILLed in the middle of a
two-phase commit, the other takes over within the session timeout and finishes the
in-doubt transfers."""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Iterator

import asyncpg
import httpx
import pytest

from coordinator.coordination import LEADER_ROLE
from coordinator.service import WalletService
from shard_router.stores import connect_zookeeper
from shard_router.topology import Topology
from shard_router.zookeeper_store import ZooKeeperTopologyStore
from shards.cluster import LocalCluster, free_port
from tests.conftest import TEST_SECRET, accounts_on, bearer, make_home, open_accounts

WALLET = str(Path(sys.executable).parent / "wallet")
SESSION_TIMEOUT_MS = 4000
START_TIMEOUT_S = 60
TAKEOVER_TIMEOUT_S = 40


class Coordinator:
    def __init__(self, zookeeper: str, root: str, home: Path, fault_point: str | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        environment = {**os.environ, "WALLET_HOME": str(home), "WALLET_PORT": str(self.port),
                       "WALLET_ZK_HOSTS": zookeeper, "WALLET_ZK_ROOT": root,
                       "WALLET_ZK_SESSION_TIMEOUT_MS": str(SESSION_TIMEOUT_MS), "WALLET_AUTH_SECRET": TEST_SECRET}
        environment.pop("WALLET_FAULT_POINT", None)
        if fault_point:
            environment["WALLET_FAULT_POINT"] = fault_point
        self.process = subprocess.Popen([WALLET, "serve"], env=environment, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True)

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"serve exited early:\n{self.output()}"
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError("serve did not become ready")

    def output(self) -> str:
        return self.process.stdout.read() if self.process.stdout else ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def zk_store(cluster: LocalCluster, zookeeper: str, zk_root: str) -> Iterator[ZooKeeperTopologyStore]:
    store = ZooKeeperTopologyStore(connect_zookeeper(zookeeper, SESSION_TIMEOUT_MS), zk_root, owns_client=True)
    store.save(cluster.topology)
    try:
        yield store
    finally:
        store.close()


def leader_pid(store: ZooKeeperTopologyStore) -> int | None:
    contenders = store.client.Lock(f"{store.root}/leaders/{LEADER_ROLE}").contenders()
    return int(contenders[0].rsplit(":", 1)[1]) if contenders else None


def wait_until(condition, timeout_s: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


async def prepared_on(topology: Topology) -> int:
    total = 0
    for dsn in topology.shards.values():
        connection = await asyncpg.connect(dsn)
        try:
            total += await connection.fetchval("SELECT count(*) FROM pg_prepared_xacts WHERE gid LIKE 'wallet:2pc:%'")
        finally:
            await connection.close()
    return total


async def test_recovery_leader_failover(service: WalletService, zk_store: ZooKeeperTopologyStore, zookeeper: str) -> None:
    """Protects the in-doubt guarantee across processes: the follower does not act while the
    leader lives, and finishes the dead leader's prepared transfers after its session ends."""
    topology = service.topology
    sources = accounts_on(topology, "shard0", 4)
    targets = accounts_on(topology, "shard3", 4)
    await open_accounts(service, sources + targets, deposit="50.00")
    home = make_home("failover")

    leader = Coordinator(zookeeper, zk_store.root, home, fault_point="2pc.after_decision")
    follower: Coordinator | None = None
    try:
        await asyncio.to_thread(leader.wait_ready)
        await asyncio.to_thread(wait_until, lambda: leader_pid(zk_store) == leader.process.pid, 20, "the first leader")
        follower = Coordinator(zookeeper, zk_store.root, home)
        await asyncio.to_thread(follower.wait_ready)
        assert leader_pid(zk_store) == leader.process.pid, "the second process waits its turn"

        ids = [str(uuid.uuid4()) for _ in sources]

        async def send(source: str, target: str, transaction_id: str) -> None:
            body = {"from_account": source, "to_account": target, "amount": "5.00", "currency": "USD",
                    "transaction_id": transaction_id, "mode": "2pc"}
            try:
                async with httpx.AsyncClient(timeout=30) as client:
                    await client.post(f"{leader.url}/v1/wallet/balance_transfer", json=body, headers=bearer(f"owner-{source}", admin=False))
            except httpx.HTTPError:
                pass  # the leader dies mid-request

        await asyncio.gather(*(send(s, t, i) for s, t, i in zip(sources, targets, ids)))
        await asyncio.to_thread(leader.process.wait, 30)
        assert leader.process.returncode == -signal.SIGKILL, leader.output()
        assert await prepared_on(topology) > 0, "the leader died with branches prepared (in doubt)"

        await asyncio.to_thread(wait_until, lambda: leader_pid(zk_store) == follower.process.pid,
                                TAKEOVER_TIMEOUT_S, "the follower to lead")
        deadline = time.monotonic() + TAKEOVER_TIMEOUT_S
        while await prepared_on(topology) > 0:
            assert time.monotonic() < deadline, "the new leader did not finish the in-doubt transfers"
            await asyncio.sleep(0.5)
        # The decision was commit: every transfer of the dead leader's batch is applied, once;
        # requests that had not reached a batch yet were never started (404, nothing moved).
        applied = 0
        for source, transaction_id in zip(sources, ids):
            async with httpx.AsyncClient(timeout=30) as client:
                shown = await client.get(f"{follower.url}/v1/transfers/{transaction_id}", headers=bearer())
            assert shown.status_code in (200, 404), shown.text
            success = shown.status_code == 200
            if success:
                assert shown.json()["status"] == "success", shown.text
                applied += 1
            assert (await service.get_account(source)).balance == (4500 if success else 5000)
        assert applied >= 1
    finally:
        leader.stop()
        if follower is not None:
            follower.stop()
