"""Local cluster launcher: N PostgreSQL servers on loopback, for development, tests, benchmarks
and chaos runs (`wallet dev up`).

Each shard is its own server process (initdb + pg_ctl) with its data under
`<home>/shards/<name>`. Durability stays on (fsync, synchronous_commit): durability is
the product. When run as root the servers run as the `postgres` user, since
PostgreSQL refuses to run as root.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from core.domain.errors import ConfigurationError
from core.runtime.settings import LOCAL_SHARDS_MAX
from shard_router.file_store import FileTopologyStore
from shard_router.topology import LedgerServer, Topology

POSTGRES_BIN_CANDIDATES = ("/usr/lib/postgresql/15/bin", "/usr/lib/postgresql/16/bin", "/usr/lib/postgresql/17/bin")
DATABASE = "wallet"
SUPERUSER = "wallet"
START_TIMEOUT_S = 60
SHARD_COUNT_MAX = LOCAL_SHARDS_MAX
# Every setting the shards need; docker/ names the same ones (tests/test_docker.py checks).
SERVER_SETTINGS: dict[str, str] = {
    "listen_addresses": "127.0.0.1",
    "max_connections": "200",
    "max_prepared_transactions": "200",  # 2PC needs it > 0: at least max_connections
    "shared_buffers": "128MB",
    "fsync": "on",
    "synchronous_commit": "on",
    "full_page_writes": "on",
    "wal_level": "replica",
    "max_wal_size": "2GB",
    "checkpoint_timeout": "15min",
}


def postgres_bin() -> Path:
    configured = os.environ.get("WALLET_PG_BIN")
    candidates = (configured,) if configured else POSTGRES_BIN_CANDIDATES
    for candidate in candidates:
        if candidate and (Path(candidate) / "pg_ctl").exists():
            return Path(candidate)
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).parent
    raise ConfigurationError(
        "PostgreSQL server binaries not found: install postgresql-15 (apt-get install -y "
        "postgresql-15) or set WALLET_PG_BIN to the directory holding pg_ctl"
    )


def temporary_home(prefix: str) -> Path:
    """A fresh directory for a throwaway cluster. Not under a 0700 parent (pytest's tmp_path is
    one for root): the servers run as `postgres` and must reach their data through it."""
    home = Path(tempfile.mkdtemp(prefix=f"wallet-{prefix}-"))
    os.chmod(home, 0o755)
    return home


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


LEDGER = "ledger"  # the event ledger's (first) server, beside the shards; the next are ledger1, ledger2, ...
LEDGERS_MAX = 8


def ledger_names(count: int) -> list[str]:
    """The local ledger servers' names: `ledger`, then `ledger1`, `ledger2`, ..."""
    return [LEDGER if index == 0 else f"{LEDGER}{index}" for index in range(count)]


def is_ledger(name: str) -> bool:
    return name == LEDGER or (name.startswith(LEDGER) and name[len(LEDGER) :].isdigit())


@dataclass(frozen=True)
class ShardServer:
    name: str
    data_dir: Path
    port: int

    @property
    def database(self) -> str:
        return LEDGER if is_ledger(self.name) else DATABASE

    @property
    def dsn(self) -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{self.database}"


class LocalCluster:
    """`start()` is idempotent and reuses existing data; `stop()` stops every server."""

    def __init__(
        self,
        home: Path,
        shard_count: int = 4,
        settings: dict[str, str] | None = None,
        ledger: bool = True,
        ledgers: int | None = None,
    ) -> None:
        """`ledgers`: ledger servers to run (None: as many as the home already has, at least 1)."""
        self.home = Path(home).resolve()
        self.state_path = self.home / "cluster.json"
        self.topology_path = self.home / "topology.json"
        if ledgers is None:
            ledgers = max(1, sum(1 for name in self._load_ports() if is_ledger(name)))
        if not 1 <= shard_count <= SHARD_COUNT_MAX:
            raise ConfigurationError(f"a local cluster has 1..{SHARD_COUNT_MAX} shards, not {shard_count}")
        if not 1 <= ledgers <= LEDGERS_MAX:
            raise ConfigurationError(f"a local cluster has 1..{LEDGERS_MAX} ledger servers, not {ledgers}")
        self.shard_count = shard_count
        self.settings = {**SERVER_SETTINGS, **(settings or {})}
        self.bin = postgres_bin()
        self.servers: list[ShardServer] = []
        self.names = [f"shard{index}" for index in range(shard_count)] + (ledger_names(ledgers) if ledger else [])

    # -- running commands as the right user ------------------------------------------
    def _as_owner(self, command: list[str]) -> list[str]:
        if os.geteuid() == 0:
            return ["runuser", "-u", "postgres", "--", *command]
        return command

    def _run(self, command: list[str]) -> None:
        completed = subprocess.run(self._as_owner(command), capture_output=True, text=True)
        if completed.returncode != 0:
            raise RuntimeError(
                f"{' '.join(command)} failed ({completed.returncode}):\n{completed.stderr}{completed.stdout}"
            )

    def _chown(self, path: Path) -> None:
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            for root, _, files in os.walk(path):
                os.chown(root, owner.pw_uid, owner.pw_gid)
                for name in files:
                    os.chown(os.path.join(root, name), owner.pw_uid, owner.pw_gid)

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> Topology:
        self.home.mkdir(parents=True, exist_ok=True)
        (self.home / "shards").mkdir(exist_ok=True)
        if os.geteuid() == 0:
            # postgres must be able to reach its data directory through the home.
            os.chmod(self.home, 0o755)
            os.chmod(self.home / "shards", 0o755)
        ports = self._load_ports()
        self.servers = []
        for name in self.names:
            port = ports.get(name)
            if port is None or not (self._is_running(self.home / "shards" / name) or port_is_free(port)):
                port = free_port()
            server = ShardServer(name, self.home / "shards" / name, port)
            self._init(server)
            self._start(server)
            self.servers.append(server)
        self._save_ports()
        return self._write_topology()

    def stop(self) -> None:
        for server in self.servers or self._known_servers():
            if self._is_running(server.data_dir):
                self._run([str(self.bin / "pg_ctl"), "-D", str(server.data_dir), "-m", "fast", "-w", "stop"])

    def stop_shard(self, name: str, mode: str = "immediate") -> None:
        """Stop one server, e.g. to test a shard outage. `immediate` is a crash."""
        server = self.server(name)
        self._run([str(self.bin / "pg_ctl"), "-D", str(server.data_dir), "-m", mode, "-w", "stop"])

    def start_shard(self, name: str) -> None:
        self._start(self.server(name))

    def server(self, name: str) -> ShardServer:
        for server in self.servers:
            if server.name == name:
                return server
        raise KeyError(f"no shard {name!r} in this cluster")

    @property
    def topology(self) -> Topology:
        return FileTopologyStore(self.topology_path).load()

    # -- pieces --------------------------------------------------------------------------
    def _init(self, server: ShardServer) -> None:
        if (server.data_dir / "PG_VERSION").exists():
            return
        server.data_dir.mkdir(parents=True, exist_ok=True)
        self._chown(server.data_dir)
        os.chmod(server.data_dir, 0o700)
        self._run(
            [
                str(self.bin / "initdb"),
                "-D",
                str(server.data_dir),
                "-U",
                SUPERUSER,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-instructions",
            ]
        )
        # Loopback only; trust is acceptable for a local development cluster and nothing else.
        (server.data_dir / "pg_hba.conf").write_text("local all all trust\nhost all all 127.0.0.1/32 trust\n")
        self._chown(server.data_dir)
        self._start(server)
        try:
            self._run(
                [
                    str(self.bin / "createdb"),
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(server.port),
                    "-U",
                    SUPERUSER,
                    server.database,
                ]
            )
        finally:
            self._run([str(self.bin / "pg_ctl"), "-D", str(server.data_dir), "-m", "fast", "-w", "stop"])

    def _start(self, server: ShardServer) -> None:
        if self._is_running(server.data_dir):
            return
        options = [f"-p {server.port}", f"-k {server.data_dir}"]
        options += [f"-c {key}={value}" for key, value in self.settings.items()]
        self._run(
            [
                str(self.bin / "pg_ctl"),
                "-D",
                str(server.data_dir),
                "-l",
                str(server.data_dir / "server.log"),
                "-o",
                " ".join(options),
                "-t",
                str(START_TIMEOUT_S),
                "-w",
                "start",
            ]
        )

    def _is_running(self, data_dir: Path) -> bool:
        if not (data_dir / "postmaster.pid").exists():
            return False
        completed = subprocess.run(
            self._as_owner([str(self.bin / "pg_ctl"), "-D", str(data_dir), "status"]), capture_output=True
        )
        return completed.returncode == 0

    def _load_ports(self) -> dict[str, int]:
        if not self.state_path.exists():
            return {}
        return {name: int(port) for name, port in json.loads(self.state_path.read_text())["ports"].items()}

    def _save_ports(self) -> None:
        ports = {server.name: server.port for server in self.servers}
        self.state_path.write_text(json.dumps({"ports": ports}, indent=2) + "\n")

    def _known_servers(self) -> list[ShardServer]:
        return [ShardServer(name, self.home / "shards" / name, port) for name, port in self._load_ports().items()]

    def _write_topology(self) -> Topology:
        store = FileTopologyStore(self.topology_path)
        addresses = {server.name: server.dsn for server in self.servers if not is_ledger(server.name)}
        ledgers = {server.name: server.dsn for server in self.servers if is_ledger(server.name)}
        if store.exists():
            current = store.load()
            known = {name: server.dsn for name, server in current.ledgers.items()}
            if dict(current.shards) == addresses and known == ledgers:
                return current
            if set(current.shards) == set(addresses) and set(known) <= set(ledgers):
                # Same placement, new ports: keep every account and stream where it is; a
                # ledger server new to this home starts holding no stream.
                topology = current.with_shards(addresses, ledgers)
                added = {name: LedgerServer(dsn, ()) for name, dsn in ledgers.items() if name not in known}
                if added:
                    topology = topology.with_ledgers({**topology.ledgers, **added})
                store.save(topology)
                return topology
            if set(current.shards) == set(addresses):
                raise ConfigurationError(
                    f"{self.topology_path} names ledger servers {sorted(known)}, the cluster runs {sorted(ledgers)}: "
                    f"start them all (--ledgers {len(known)})"
                )
            raise ConfigurationError(
                f"{self.topology_path} names shards {sorted(current.shards)}, the cluster has {sorted(addresses)}: "
                "a local cluster never re-homes accounts; use a fresh WALLET_HOME"
            )
        topology = Topology.even(addresses, ledgers=ledgers)
        store.save(topology)
        return topology
