"""The election bridge (coordinator/cluster/leadership.py) against a ZooKeeper of its own, which
this test stops and starts: one leader at a time; a SUSPENDED session stops the leader at
once; a LOST one hands the role to the other contender."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from coordinator.cluster.leadership import Leadership
from launchers.zookeeper import LocalZooKeeper
from shard_router.stores import connect_zookeeper
from tests.helpers import eventually, make_home

SESSION_TIMEOUT_MS = 6000
WAIT_S = 40


@pytest.fixture
def own_zookeeper() -> Iterator[LocalZooKeeper]:
    server = LocalZooKeeper(make_home("zk-election"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_one_leader_suspended_stops_lost_hands_over(own_zookeeper: LocalZooKeeper) -> None:
    """Protects the singletons: never two acting leaders, and a leader cut off from ZooKeeper
    stops acting before anyone else can take over."""
    first_client = connect_zookeeper(own_zookeeper.hosts, SESSION_TIMEOUT_MS)
    second_client = connect_zookeeper(own_zookeeper.hosts, SESSION_TIMEOUT_MS)
    first = Leadership(first_client, "/wallet/leaders/singletons", "first")
    second = Leadership(second_client, "/wallet/leaders/singletons", "second")
    try:
        first.start()
        eventually(first.is_leader, "the first leader", WAIT_S)
        second.start()
        time.sleep(1)
        assert first.is_leader() and not second.is_leader()
        assert first.leader() == "first"

        # The server goes away: both sessions are SUSPENDED, and the leader stops at once.
        own_zookeeper.stop()
        eventually(lambda: not first.is_leader(), "the suspended leader to stop", 5)
        assert not second.is_leader()
        # Back: the sessions resume (or, on a slow machine, expire and are contended again);
        # either way one leader, never two.
        own_zookeeper.start()
        eventually(lambda: first.is_leader() or second.is_leader(), "a leader once the server is back", WAIT_S)
        assert not (first.is_leader() and second.is_leader())

        # The leader's session ends (LOST): the other contender takes the role.
        leader, other, leader_client = (
            (first, second, first_client) if first.is_leader() else (second, first, second_client)
        )
        leader_client.stop()
        assert not leader.is_leader()
        eventually(other.is_leader, "the other contender to lead", WAIT_S)
        assert other.leader() == other.identifier
    finally:
        first.stop()
        second.stop()
        for client in (first_client, second_client):
            client.stop()
            client.close()


def test_local_leader_is_one_process_at_a_time(tmp_path) -> None:
    """Protects the embedded default with several processes on one home (`serve --workers`):
    one file lock, one leader; when it goes, the next check of another takes over."""
    from coordinator.cluster.leadership import LocalLeader

    first, second = LocalLeader(tmp_path / "leader.lock"), LocalLeader(tmp_path / "leader.lock")
    assert first.is_leader()
    assert not second.is_leader()
    assert first.is_leader(), "a leader stays the leader"
    first.stop()  # the process exits: the kernel drops its lock
    assert second.is_leader()
    assert not first.is_leader()
    second.stop()
