"""Patroni-managed PostgreSQL for development and tests: every shard and the ledger a
cluster of a primary and a synchronous standby on loopback, Patroni keeping each cluster's
leader key in ZooKeeper (the same ensemble as the topology). Production runs the same
configuration on its own hosts (docker/).

What it settles, and why:
- `synchronous_mode: true`, `synchronous_commit: on`: a commit is acknowledged only once the
  synchronous standby has it, and Patroni promotes only a member that was synchronous, so a
  failover loses no acknowledged transfer.
- `synchronous_mode_strict: false`: with one standby, strict mode would stop every write on a
  shard whose standby is down (and after every failover, until the old primary rejoins): the
  opposite of available. Non-strict keeps writing on the primary alone while it has no
  standby; /readyz says so (no synchronous standby), and only a second failure in that
  window (losing the primary's disk) could lose what was committed alone. A cluster of three
  members with `synchronous_node_count: 1` gets both; docker/ says how.
- `primary_start_timeout: 0`: a crashed primary is not restarted in place while a
  synchronous standby can take over at once.
- `use_pg_rewind` with `wal_log_hints`: the old primary rejoins as a standby without a copy.
- The settings a member must share (max_connections, max_prepared_transactions: 2PC's
  prepared transactions are WAL-logged and replicated, and a standby refuses to replay them
  with fewer slots) live in the cluster's configuration in ZooKeeper, not per member.

As root, Patroni (and so PostgreSQL) runs as the postgres user.
"""

from __future__ import annotations

import json
import os
import pwd
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.domain.errors import ConfigurationError
from core.runtime.settings import HA_MEMBERS_MAX, HA_MEMBERS_MIN
from launchers.postgres import (
    DATABASE,
    LEDGER,
    LEDGERS_MAX,
    SERVER_SETTINGS,
    SHARD_COUNT_MAX,
    SUPERUSER,
    free_port,
    is_ledger,
    ledger_names,
    postgres_bin,
)
from launchers.zookeeper import LocalZooKeeper
from shard_router.file_store import FileTopologyStore
from shard_router.topology import Topology

NAMESPACE = "/wallet-patroni"
SYSTEM_PYTHON = "/usr/bin/python3"
MEMBERS_MIN, MEMBERS_MAX = HA_MEMBERS_MIN, HA_MEMBERS_MAX
# The leader key lives this long without renewal (ZooKeeper's session); Patroni checks every
# LOOP_WAIT_S and retries the store for RETRY_TIMEOUT_S (loop_wait + 2 * retry_timeout <= ttl).
# 20 s is Patroni's minimum: it raises a smaller ttl to 20 ("ttl=10 can't be smaller than 20,
# adjusting...", seen in every member's log of `wallet chaos multihost`), so a primary cut off
# the network is replaced after about 20 s (a crashed one at once: its Patroni releases the key).
TTL_S = 20
LOOP_WAIT_S = 1
RETRY_TIMEOUT_S = 4
READY_TIMEOUT_S = 120
REPLICATION_USER = "replicator"
# What every member of a cluster must share, kept in the cluster's configuration in
# ZooKeeper; the rest of SERVER_SETTINGS is per member.
SHARED_SETTINGS = ("max_connections", "max_prepared_transactions", "wal_level")
# A new standby clones the primary with pg_basebackup, which first asks for a checkpoint. A
# spread one paces its writes (about 0.1 s a dirty buffer): a clone started right after the
# database was created (docker/'s post_init) waited 92 s for its 922 buffers in `wallet chaos
# multihost`. A fast one writes them at once.
BASEBACKUP = [{"checkpoint": "fast"}]
MEMBER_SETTINGS = {
    key: value for key, value in SERVER_SETTINGS.items() if key not in SHARED_SETTINGS and key != "listen_addresses"
}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _gone_within(pid: int, timeout_s: float) -> bool:
    """Whether the process ends within the timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.1)
    return not _alive(pid)


def _stop_group(pid: int, timeout_s: float = 30) -> None:
    """SIGTERM to a process group we started in another run, then SIGKILL past the timeout."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    if not _gone_within(pid, timeout_s):
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def bootstrap_dcs() -> dict[str, Any]:
    """The configuration every cluster starts with in ZooKeeper (Patroni's DCS): the same for
    the local clusters and docker/patroni.yml (tests/test_docker.py holds them equal)."""
    shared = {key: SERVER_SETTINGS[key] for key in SHARED_SETTINGS}
    return {
        "ttl": TTL_S,
        "loop_wait": LOOP_WAIT_S,
        "retry_timeout": RETRY_TIMEOUT_S,
        "maximum_lag_on_failover": 1_048_576,
        "primary_start_timeout": 0,
        "synchronous_mode": True,
        "synchronous_mode_strict": False,
        "postgresql": {
            "use_pg_rewind": True,
            "use_slots": True,
            "parameters": {
                **shared,
                "hot_standby": "on",
                "wal_log_hints": "on",
                "max_wal_senders": 10,
                "max_replication_slots": 10,
                "wal_keep_size": "256MB",
            },
        },
    }


def patroni_command() -> tuple[list[str], dict[str, str]]:
    """(command, environment) running Patroni. It runs as the postgres user, who cannot reach
    a Python under root's home (pyenv's), so it is the system's Python 3 over a directory of
    its own packages: `pip install --target .venv/patroni 'patroni[zookeeper,psycopg3]'`
    (`make install` does it). WALLET_PATRONI_PYTHON and WALLET_PATRONI_PATH say otherwise."""
    python = os.environ.get("WALLET_PATRONI_PYTHON", SYSTEM_PYTHON)
    packages = Path(os.environ.get("WALLET_PATRONI_PATH", str(Path(sys.prefix) / "patroni")))
    if not (packages / "patroni").is_dir():
        raise ConfigurationError(
            f"Patroni is not installed in {packages}: pip install --target {packages} "
            "'patroni[zookeeper,psycopg3]' (make install does it)"
        )
    if not Path(python).exists():
        raise ConfigurationError(
            f"no Python at {python} for Patroni (apt-get install -y python3, or set WALLET_PATRONI_PYTHON)"
        )
    return [python, "-m", "patroni"], {"PYTHONPATH": str(packages), "PATH": os.environ.get("PATH", "")}


@dataclass
class Member:
    cluster: str  # a shard's name, or "ledger"
    name: str
    pg_port: int
    api_port: int
    home: Path
    process: subprocess.Popen[bytes] | None = None
    recorded_pid: int | None = None  # Patroni's pid, as the state file has it (`wallet dev down`)

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def config_path(self) -> Path:
        return self.home / "patroni.yml"  # JSON, which Patroni reads as YAML

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def dsn(self, database: str) -> str:
        """This one server, whatever its role."""
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.pg_port}/{database}"

    @property
    def patroni_pid(self) -> int | None:
        """Patroni's process (the leader of its process group), from this run or the state file."""
        if self.process is not None:
            return self.process.pid if self.process.poll() is None else None
        return self.recorded_pid if self.recorded_pid and _alive(self.recorded_pid) else None

    def postmaster_pid(self) -> int | None:
        try:
            return int((self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None


@dataclass
class HaCluster:
    """`start()` brings up ZooKeeper (unless `zk_hosts` names one), every cluster, waits for a
    leader and a synchronous standby in each, creates the databases and writes the topology,
    whose DSNs name every member with target_session_attrs=read-write: a connection reaches
    the current primary without a proxy."""

    home: Path
    shard_count: int = 2
    members: int = 2
    ledger: bool = True
    ledgers: int = 1  # ledger servers (partitions), each a Patroni cluster of `members`
    zk_hosts: str | None = None
    clusters: dict[str, list[Member]] = field(default_factory=dict)
    zookeeper: LocalZooKeeper | None = None

    def __post_init__(self) -> None:
        self.home = Path(self.home).resolve()
        if not 1 <= self.shard_count <= SHARD_COUNT_MAX:
            raise ConfigurationError(f"an HA cluster has 1..{SHARD_COUNT_MAX} shards, not {self.shard_count}")
        if not MEMBERS_MIN <= self.members <= MEMBERS_MAX:
            raise ConfigurationError(
                f"each HA cluster has {MEMBERS_MIN}..{MEMBERS_MAX} members (a primary and "
                f"its standbys), not {self.members}"
            )
        if not 1 <= self.ledgers <= LEDGERS_MAX:
            raise ConfigurationError(f"an HA cluster has 1..{LEDGERS_MAX} ledger servers, not {self.ledgers}")
        self.bin = postgres_bin()
        self.topology_path = self.home / "topology.json"
        self.state_path = self.home / "ha.json"
        self.names = [f"shard{index}" for index in range(self.shard_count)] + (
            ledger_names(self.ledgers) if self.ledger else []
        )

    @staticmethod
    def exists(home: Path) -> bool:
        """An HA cluster was started in this home (its state file is there)."""
        return (Path(home) / "ha.json").exists()

    # -- addresses -----------------------------------------------------------------------
    @staticmethod
    def database_of(cluster: str) -> str:
        return LEDGER if is_ledger(cluster) else DATABASE

    def dsn(self, cluster: str) -> str:
        hosts = ",".join(f"127.0.0.1:{member.pg_port}" for member in self.clusters[cluster])
        return f"postgresql://{SUPERUSER}@{hosts}/{self.database_of(cluster)}?target_session_attrs=read-write"

    @property
    def topology(self) -> Topology:
        return FileTopologyStore(self.topology_path).load()

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> Topology:
        patroni_command()  # refuse a missing Patroni before anything is started
        self.home.mkdir(parents=True, exist_ok=True)
        os.chmod(self.home, 0o755)
        state = self._load_state()
        if self.zk_hosts is None:
            self.zookeeper = LocalZooKeeper(self.home / "zookeeper", state.get("zookeeper_port"))
            if not self.zookeeper.answers():
                self.zookeeper.start()
            self.zk_hosts = self.zookeeper.hosts
        self._load_members(state)
        for members in self.clusters.values():
            for member in members:
                self._configure(member)
        for members in self.clusters.values():
            for member in members:
                self.start_member(member)
        self._save_state()
        for name in self.names:
            self.wait_healthy(name)
            self._create_database(name)
        return self._write_topology()

    def stop(self) -> None:
        """Every member (Patroni stops its server), then the ZooKeeper this cluster started:
        from this process's handles or, in another process (`wallet dev down`), the state file."""
        if not self.clusters:
            state = self._load_state()
            for member_name, found in state.get("members", {}).items():
                cluster = member_name.rsplit("-", 1)[0]
                self.clusters.setdefault(cluster, []).append(
                    Member(
                        cluster,
                        member_name,
                        found["pg_port"],
                        found["api_port"],
                        self.home / "ha" / member_name,
                        recorded_pid=found.get("pid"),
                    )
                )
            for members in self.clusters.values():
                for member in members:
                    self.stop_member(member)
            if self.zookeeper is None and state.get("zookeeper_pid"):
                _stop_group(int(state["zookeeper_pid"]))
            return
        for members in self.clusters.values():
            for member in members:
                self.stop_member(member)
        if self.zookeeper is not None:
            self.zookeeper.stop()

    def start_member(self, member: Member) -> None:
        if member.patroni_pid is not None:
            return
        log = open(member.home / "patroni.log", "ab")
        patroni, environment = patroni_command()
        command = [*patroni, str(member.config_path)]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", "env", f"PYTHONPATH={environment['PYTHONPATH']}", *command]
        member.process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=member.home,
            env={**os.environ, **environment},
        )
        if self.state_path.exists():  # a member started again later: `stop()` from the state finds it
            self._save_state()

    def stop_member(self, member: Member, timeout_s: float = 30) -> None:
        """Patroni stops its PostgreSQL (fast) and exits."""
        pid = member.patroni_pid
        if pid is None:
            return
        if member.process is not None:
            os.killpg(pid, signal.SIGTERM)
            try:
                member.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.kill_member(member)
        else:
            _stop_group(pid, timeout_s)
        self._stop_orphan_server(member, timeout_s)
        self._save_state()

    def _stop_orphan_server(self, member: Member, timeout_s: float) -> None:
        """A server Patroni left running as it exited (the signal reached both at once, say):
        stopped fast, then killed past the timeout. Nothing may outlive `stop()`."""
        pid = member.postmaster_pid()
        if pid is None or not _alive(pid):
            return
        try:
            os.kill(pid, signal.SIGINT)  # PostgreSQL's fast shutdown
        except ProcessLookupError:
            return
        if not _gone_within(pid, timeout_s):
            try:
                os.killpg(os.getpgid(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass

    def kill_postmaster(self, member: Member) -> int:
        """SIGKILL of the member's postmaster (a crash of the server; Patroni lives on)."""
        pid = member.postmaster_pid()
        assert pid is not None, f"{member.name} has no running postmaster"
        os.kill(pid, signal.SIGKILL)
        return pid

    def kill_member(self, member: Member) -> None:
        """SIGKILL of the whole member: Patroni, its PostgreSQL and every backend (a host lost)."""
        pid = member.postmaster_pid()
        if member.patroni_pid is not None:
            os.killpg(member.patroni_pid, signal.SIGKILL)
            if member.process is not None:
                member.process.wait()
        member.recorded_pid = None
        if pid is not None:
            try:
                os.killpg(os.getpgid(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass

    # -- state ---------------------------------------------------------------------------
    def roles(self, cluster: str) -> dict[str, tuple[str, str]]:
        """member name -> (role, state) as Patroni reports the cluster (any member answers)."""
        for member in self.clusters[cluster]:
            try:
                with urllib.request.urlopen(f"{member.api}/cluster", timeout=2) as answer:
                    listed = json.loads(answer.read())
            except (OSError, urllib.error.URLError, ValueError):
                continue
            return {m["name"]: (m.get("role", "?"), m.get("state", "?")) for m in listed.get("members", [])}
        return {}

    def leader(self, cluster: str) -> Member | None:
        """The member that leads and takes writes now (Patroni names the leader as it starts
        the promotion; the server leaves recovery a moment later)."""
        roles = self.roles(cluster)
        for member in self.clusters[cluster]:
            if roles.get(member.name, ("", ""))[0] == "leader" and roles[member.name][1] == "running":
                return member if self.writable(member) else None
        return None

    def writable(self, member: Member) -> bool:
        answer = subprocess.run(
            [
                str(self.bin / "psql"),
                "-h",
                "127.0.0.1",
                "-p",
                str(member.pg_port),
                "-U",
                SUPERUSER,
                "-d",
                "postgres",
                "-Atc",
                "SELECT pg_is_in_recovery()",
            ],
            capture_output=True,
            text=True,
        )
        return answer.returncode == 0 and answer.stdout.strip() == "f"

    def sync_standby(self, cluster: str) -> Member | None:
        roles = self.roles(cluster)
        for member in self.clusters[cluster]:
            if roles.get(member.name, ("", ""))[0] == "sync_standby" and roles[member.name][1] == "streaming":
                return member
        return None

    def wait_new_leader(self, cluster: str, old: Member, timeout_s: float = READY_TIMEOUT_S) -> Member:
        """Until a member other than `old` leads the cluster (a failover happened)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            leader = self.leader(cluster)
            if leader is not None and leader.name != old.name:
                return leader
            time.sleep(0.1)
        raise RuntimeError(
            f"cluster {cluster}: no member took over from {old.name} in {timeout_s:.0f} s: {self.roles(cluster)}"
        )

    def wait_healthy(self, cluster: str, timeout_s: float = READY_TIMEOUT_S, standby: bool = True) -> Member:
        """Until the cluster has a running leader (and a streaming synchronous standby)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            leader = self.leader(cluster)
            if leader is not None and (not standby or self.sync_standby(cluster) is not None):
                return leader
            for member in self.clusters[cluster]:
                if member.process is not None and member.process.poll() not in (None, 0):
                    raise RuntimeError(
                        f"Patroni of {member.name} exited with {member.process.returncode}; "
                        f"see {member.home / 'patroni.log'}"
                    )
            time.sleep(0.3)
        raise RuntimeError(
            f"cluster {cluster} has no leader with a synchronous standby after {timeout_s:.0f} s: "
            f"{self.roles(cluster)}; see {self.home / 'ha'}/*/patroni.log"
        )

    # -- pieces --------------------------------------------------------------------------
    def _configure(self, member: Member) -> None:
        member.home.mkdir(parents=True, exist_ok=True)
        config: dict[str, Any] = {
            "scope": f"wallet-{member.cluster}",
            "namespace": NAMESPACE,
            "name": member.name,
            "restapi": {"listen": f"127.0.0.1:{member.api_port}", "connect_address": f"127.0.0.1:{member.api_port}"},
            "zookeeper": {"hosts": [self.zk_hosts]},
            "bootstrap": {"dcs": bootstrap_dcs(), "initdb": [{"encoding": "UTF8"}, {"locale": "C"}]},
            "postgresql": {
                "listen": f"127.0.0.1:{member.pg_port}",
                "connect_address": f"127.0.0.1:{member.pg_port}",
                "data_dir": str(member.data_dir),
                "bin_dir": str(self.bin),
                "pgpass": str(member.home / "pgpass"),
                "authentication": {
                    "superuser": {"username": SUPERUSER, "password": SUPERUSER},
                    "replication": {"username": REPLICATION_USER, "password": REPLICATION_USER},
                },
                "parameters": {**MEMBER_SETTINGS, "unix_socket_directories": str(member.home)},
                "basebackup": BASEBACKUP,
                # Loopback only; trust is acceptable for a local development cluster and nothing else.
                "pg_hba": [
                    "local all all trust",
                    "host all all 127.0.0.1/32 trust",
                    f"host replication {REPLICATION_USER} 127.0.0.1/32 trust",
                ],
            },
            "tags": {"nofailover": False, "noloadbalance": False, "clonefrom": False, "nosync": False},
        }
        member.config_path.write_text(json.dumps(config, indent=2) + "\n")  # JSON is YAML
        self._chown(member.home)

    def _chown(self, path: Path) -> None:
        if os.geteuid() != 0:
            return
        owner = pwd.getpwnam("postgres")
        for root, _, files in os.walk(path):
            os.chown(root, owner.pw_uid, owner.pw_gid)
            for name in files:
                os.chown(os.path.join(root, name), owner.pw_uid, owner.pw_gid)
        os.chmod(path, 0o700)

    def _create_database(self, cluster: str) -> None:
        leader = self.leader(cluster)
        assert leader is not None, f"{cluster} has no leader"
        database = self.database_of(cluster)
        common = ["-h", "127.0.0.1", "-p", str(leader.pg_port), "-U", SUPERUSER]
        exists = subprocess.run(
            [
                str(self.bin / "psql"),
                *common,
                "-d",
                "postgres",
                "-Atc",
                f"SELECT 1 FROM pg_database WHERE datname = '{database}'",
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        if exists.stdout.strip() != "1":
            subprocess.run([str(self.bin / "createdb"), *common, database], capture_output=True, text=True, check=True)
        # A synchronous commit is flushed on the standby, not yet replayed: wait until every
        # member has the database, or a multi-host DSN reaching a standby first is refused
        # ("database does not exist") before it tries the primary.
        deadline = time.monotonic() + READY_TIMEOUT_S
        for member in self.clusters[cluster]:
            while (
                subprocess.run(
                    [
                        str(self.bin / "psql"),
                        "-h",
                        "127.0.0.1",
                        "-p",
                        str(member.pg_port),
                        "-U",
                        SUPERUSER,
                        "-d",
                        database,
                        "-Atc",
                        "SELECT 1",
                    ],
                    capture_output=True,
                ).returncode
                != 0
            ):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"database {database} did not reach {member.name} in {READY_TIMEOUT_S} s")
                time.sleep(0.2)

    def _load_state(self) -> dict[str, Any]:
        return json.loads(self.state_path.read_text()) if self.state_path.exists() else {}

    def _load_members(self, state: dict[str, Any]) -> None:
        known = state.get("members", {})
        for name in self.names:
            members = []
            for index in range(self.members):
                member_name = f"{name}-{index}"
                found = known.get(member_name, {})
                members.append(
                    Member(
                        name,
                        member_name,
                        found.get("pg_port") or free_port(),
                        found.get("api_port") or free_port(),
                        self.home / "ha" / member_name,
                        recorded_pid=found.get("pid"),
                    )
                )
            self.clusters[name] = members

    def _save_state(self) -> None:
        members = {
            member.name: {"pg_port": member.pg_port, "api_port": member.api_port, "pid": member.patroni_pid}
            for members in self.clusters.values()
            for member in members
        }
        zookeeper = self.zookeeper
        state = {
            "members": members,
            "zk_hosts": self.zk_hosts,
            "zookeeper_port": zookeeper.port if zookeeper else None,
            "zookeeper_pid": zookeeper.process.pid
            if zookeeper and zookeeper.process
            else self._load_state().get("zookeeper_pid"),
        }
        self.state_path.write_text(json.dumps(state, indent=2) + "\n")

    def _write_topology(self) -> Topology:
        store = FileTopologyStore(self.topology_path)
        addresses = {name: self.dsn(name) for name in self.names if not is_ledger(name)}
        ledgers = {name: self.dsn(name) for name in self.names if is_ledger(name)}
        if store.exists():
            current = store.load()
            if set(current.shards) == set(addresses) and set(current.ledgers) == set(ledgers):
                topology = current.with_shards(addresses, ledgers)
                store.save(topology)
                return topology
            raise ConfigurationError(
                f"{self.topology_path} names shards {sorted(current.shards)}, the HA cluster "
                f"has {sorted(addresses)}: use a fresh WALLET_HOME"
            )
        topology = Topology.even(addresses, ledgers=ledgers)
        store.save(topology)
        return topology
