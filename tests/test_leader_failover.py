"""Leader election for the singletons (recovery worker, ledger relay) over a real ZooKeeper:
two `wallet serve` processes elect one; when the leader is SIGKILLed in the middle of a
two-phase commit, the other takes over within the session timeout and finishes the
in-doubt transfers."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest

from chaos.processes import Coordinator
from coordinator.cluster.coordination import LEADER_ROLE
from coordinator.service.wallet import WalletService
from launchers.postgres import LocalCluster, free_port
from shard_router.stores import connect_zookeeper
from shard_router.zookeeper_store import ZooKeeperTopologyStore
from tests.helpers import TEST_SECRET, accounts_on, bearer, eventually, make_home, open_accounts, prepared_count

SESSION_TIMEOUT_MS = 4000
START_TIMEOUT_S = 60
TAKEOVER_TIMEOUT_S = 40


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


async def test_recovery_leader_failover(
    service: WalletService, zk_store: ZooKeeperTopologyStore, zookeeper: str
) -> None:
    """Protects the in-doubt guarantee across processes: the follower does not act while the
    leader lives, and finishes the dead leader's prepared transfers after its session ends."""
    topology = service.topology
    sources = accounts_on(topology, "shard0", 4)
    targets = accounts_on(topology, "shard3", 4)
    await open_accounts(service, sources + targets, deposit="50.00")
    home = make_home("failover")
    environment = {
        "WALLET_ZK_HOSTS": zookeeper,
        "WALLET_ZK_ROOT": zk_store.root,
        "WALLET_ZK_SESSION_TIMEOUT_MS": str(SESSION_TIMEOUT_MS),
        "WALLET_AUTH_SECRET": TEST_SECRET,
    }
    leader, follower = (
        Coordinator(index, free_port(), home / "unused-topology.json", home, environment) for index in range(2)
    )
    try:
        leader.start(fault_point="2pc.after_decision")
        leader_process = leader.process
        assert leader_process is not None
        assert await asyncio.to_thread(leader.wait_ready, START_TIMEOUT_S), leader.log_path.read_text()
        await asyncio.to_thread(eventually, lambda: leader_pid(zk_store) == leader_process.pid, "the first leader", 20)
        follower.start()
        follower_process = follower.process
        assert follower_process is not None
        assert await asyncio.to_thread(follower.wait_ready, START_TIMEOUT_S), follower.log_path.read_text()
        assert leader_pid(zk_store) == leader_process.pid, "the second process waits its turn"

        ids = [str(uuid.uuid4()) for _ in sources]

        async def send(source: str, target: str, transaction_id: str) -> None:
            body = {
                "from_account": source,
                "to_account": target,
                "amount": "5.00",
                "currency": "USD",
                "transaction_id": transaction_id,
                "mode": "2pc",
            }
            try:
                async with httpx.AsyncClient(timeout=30) as client:
                    await client.post(
                        f"{leader.url}/v1/wallet/balance_transfer",
                        json=body,
                        headers=bearer(f"owner-{source}", admin=False),
                    )
            except httpx.HTTPError:
                pass  # the leader dies mid-request

        await asyncio.gather(*(send(s, t, i) for s, t, i in zip(sources, targets, ids, strict=True)))
        await asyncio.to_thread(leader_process.wait, 30)
        assert leader.killed_itself(), leader.log_path.read_text()
        assert await prepared_count(topology) > 0, "the leader died with branches prepared (in doubt)"

        await asyncio.to_thread(
            eventually, lambda: leader_pid(zk_store) == follower_process.pid, "the follower to lead", TAKEOVER_TIMEOUT_S
        )
        deadline = time.monotonic() + TAKEOVER_TIMEOUT_S
        while await prepared_count(topology) > 0:
            assert time.monotonic() < deadline, "the new leader did not finish the in-doubt transfers"
            await asyncio.sleep(0.5)
        # The decision was commit: every transfer of the dead leader's batch is applied, once;
        # requests that had not reached a batch yet were never started (404, nothing moved).
        applied = 0
        for source, transaction_id in zip(sources, ids, strict=True):
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
        follower.stop()
