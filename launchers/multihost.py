"""A plan of docker/'s services (launchers/compose.py) running natively, each a process in
the network namespace of its compose hostname (launchers/netns.py), with the compose file's
ports and environment: started in compose's order, each kind once what it depends on is as
compose's conditions ask (ZooKeeper answering `ruok`; every Patroni cluster with a leader
and a streaming synchronous standby; `migrate` completed, retried as `restart: on-failure`
retries it; the coordinators' /readyz), stopped at the end.

Its health checks speak to the services by name, so the process that calls them runs in a
namespace of the same network (the run's client): this module only ever runs there.
"""

from __future__ import annotations

import json
import os
import pwd
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TypeVar

from launchers.compose import (
    Plan,
    command_of,
    environment_of,
    folder_of,
    haproxy_config,
    patroni_config,
    zookeeper_config,
)
from launchers.netns import StarNetwork
from shard_router.file_store import FileTopologyStore

READY_TIMEOUT_S = 240.0  # a cluster's first leader and synchronous standby, on a busy machine
POLL_S = 0.5
PROBE_TIMEOUT_S = 2.0
MIGRATE_ATTEMPTS_MAX = 20  # compose restarts `migrate` on failure until every cluster has a primary
MIGRATE_PAUSE_S = 3.0
MIGRATE_TIMEOUT_S = 300.0
STOP_TIMEOUT_S = 30.0
MEMBER_USER = "postgres"  # PostgreSQL refuses root; the image runs Patroni as postgres too

T = TypeVar("T")


class Deployment:
    def __init__(self, plan: Plan, network: StarNetwork, home: Path, secret: str) -> None:
        self.plan = plan
        self.network = network
        self.home = home
        self.variables = {"WALLET_AUTH_SECRET": secret}  # compose's interpolation of the shell's
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.interrupted = threading.Event()  # set: every wait ends at its next poll (Ctrl-C)

    @property
    def topology_path(self) -> Path:
        return self.home / "topology.json"

    def log_path(self, name: str) -> Path:
        return self.home / "logs" / f"{name}.log"

    # -- files -----------------------------------------------------------------------------
    def prepare(self) -> None:
        """Every service's folder and files: volumes, configurations, the topology."""
        (self.home / "logs").mkdir(parents=True, exist_ok=True)
        (self.home / "volumes").mkdir(exist_ok=True)
        FileTopologyStore(self.topology_path).save(self.plan.topology)
        (self.home / "haproxy.cfg").write_text(haproxy_config(self.plan))
        postgres = pwd.getpwnam(MEMBER_USER)
        for service in self.plan.services:
            folder = folder_of(service, self.home)
            folder.mkdir(parents=True, exist_ok=True)
            if service.kind == "zookeeper":
                (folder / "data").mkdir(exist_ok=True)
                (folder / "data" / "myid").write_text(f"{service.environment['ZOO_MY_ID']}\n")
                (folder / "zoo.cfg").write_text(zookeeper_config(service, self.home))
            if service.kind == "member":
                volume = self.home / "volumes" / service.volumes[0].split(":")[0]
                volume.mkdir(exist_ok=True)
                (folder / "patroni.yml").write_text(json.dumps(patroni_config(service, self.home), indent=2) + "\n")
                for path in (folder, volume, folder / "patroni.yml"):
                    os.chown(path, postgres.pw_uid, postgres.pw_gid)
                os.chmod(folder, 0o700)
                os.chmod(volume, 0o700)
        os.chmod(self.home, 0o755)  # postgres reaches its member's folder through the run's

    # -- processes -------------------------------------------------------------------------
    def start(self, name: str) -> None:
        service = self.plan.service(name)
        assert not self.alive(name), f"{name} is already running"
        environment = environment_of(service, self.home, self.variables)
        user = ["runuser", "-u", MEMBER_USER, "--"] if service.kind == "member" else []
        pairs = [f"{key}={value}" for key, value in environment.items()]
        command = self.network.exec_command(name, [*user, "env", "-i", *pairs, *command_of(service, self.home)])
        with open(self.log_path(name), "ab") as log:
            self.processes[name] = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=folder_of(service, self.home)
            )

    def alive(self, name: str) -> bool:
        process = self.processes.get(name)
        return process is not None and process.poll() is None

    def stop(self, name: str, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM to the service's process group (Patroni stops its server), SIGKILL past the timeout."""
        process = self.processes.get(name)
        if process is None or process.poll() is not None:
            return
        signal_group(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            signal_group(process.pid, signal.SIGKILL)
            process.wait()

    def stop_all(self) -> None:
        """The wallet services, then the members (all at once), then ZooKeeper."""
        for kinds in (("balancer", "relay", "coordinator", "migrate"), ("member",), ("zookeeper",)):
            group = [s.name for s in self.plan.services if s.kind in kinds and self.alive(s.name)]
            for name in group:
                signal_group(self.processes[name].pid, signal.SIGTERM)
            for name in group:
                self.stop(name)

    def logged_errors(self) -> dict[str, list[str]]:
        """The wallet services' error lines (JSON logs at level error, tracebacks), per service."""
        found: dict[str, list[str]] = {}
        for service in self.plan.services:
            if service.kind not in ("migrate", "coordinator", "relay") or not self.log_path(service.name).exists():
                continue
            lines = self.log_path(service.name).read_text(errors="replace").splitlines()
            errors = [line for line in lines if '"level": "error"' in line or line.startswith("Traceback")]
            if errors:
                found[service.name] = errors
        return found

    # -- health ----------------------------------------------------------------------------
    def zookeeper_answers(self, name: str) -> bool:
        """compose's healthcheck: `echo ruok | nc localhost 2181 | grep imok`."""
        try:
            with socket.create_connection((name, self.plan.service(name).ports[0]), PROBE_TIMEOUT_S) as connection:
                connection.sendall(b"ruok")
                return connection.recv(4) == b"imok"
        except OSError:
            return False

    def roles(self, cluster: str) -> dict[str, tuple[str, str]]:
        """member -> (role, state), as Patroni's REST API on any member that answers says."""
        for name in self.plan.clusters[cluster]:
            port = self.plan.service(name).ports[1]
            try:
                with urllib.request.urlopen(f"http://{name}:{port}/cluster", timeout=PROBE_TIMEOUT_S) as answer:
                    listed = json.loads(answer.read())
            except (OSError, urllib.error.URLError, ValueError):
                continue
            return {m["name"]: (m.get("role", "?"), m.get("state", "?")) for m in listed.get("members", [])}
        return {}

    def leader(self, cluster: str) -> str | None:
        roles = self.roles(cluster)
        return next((name for name, (role, state) in roles.items() if role == "leader" and state == "running"), None)

    def healthy(self, cluster: str) -> str | None:
        """The leader, when the cluster has one and a streaming synchronous standby."""
        roles = self.roles(cluster)
        leader = next((name for name, (role, state) in roles.items() if role == "leader" and state == "running"), None)
        standby = any(role == "sync_standby" and state == "streaming" for role, state in roles.values())
        return leader if standby else None

    def ready(self, name: str) -> bool:
        """/readyz of a coordinator (or of the balancer in front of them) answers 200."""
        port = self.plan.service(name).ports[0]
        try:
            with urllib.request.urlopen(f"http://{name}:{port}/readyz", timeout=PROBE_TIMEOUT_S) as answer:
                return bool(answer.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    def wait(self, what: str, check: Callable[[], T | None], timeout_s: float = READY_TIMEOUT_S) -> T:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.interrupted.is_set():
                raise RuntimeError(f"waiting for {what}: interrupted")
            found = check()
            if found is not None and found is not False:
                return found
            dead = [name for name in self.processes if not self.alive(name) and name != "migrate"]
            if dead:
                raise RuntimeError(f"waiting for {what}: {', '.join(dead)} exited; see {self.home / 'logs'}")
            time.sleep(POLL_S)
        raise RuntimeError(f"{what}: not within {timeout_s:.0f} s; see {self.home / 'logs'}")

    # -- bringing it up --------------------------------------------------------------------
    def up(self, say: Callable[[str], None]) -> None:
        """Every service, in compose's order, each kind once its dependencies are healthy."""
        self.prepare()
        for service in self.plan.of_kind("zookeeper"):
            self.start(service.name)
        for service in self.plan.of_kind("zookeeper"):
            self.wait(f"{service.name} answering ruok", partial(self.zookeeper_answers, service.name))
        say(f"ZooKeeper up: {self.plan.zookeeper_hosts}")
        for service in self.plan.of_kind("member"):
            self.start(service.name)
        for cluster in self.plan.clusters:
            leader = self.wait(f"{cluster}: a leader and a synchronous standby", partial(self.healthy, cluster))
            say(f"{cluster}: {leader} leads, {self.roles(cluster)}")
        self.migrate(say)
        for kind in ("coordinator", "relay"):
            for service in self.plan.of_kind(kind):
                self.start(service.name)
        for service in self.plan.of_kind("coordinator"):
            self.wait(f"{service.name} ready", partial(self.ready, service.name))
        for service in self.plan.of_kind("balancer"):
            self.start(service.name)
            self.wait(f"{service.name} ready", partial(self.ready, service.name))
        say("coordinators, relay and balancer up")

    def migrate(self, say: Callable[[str], None]) -> None:
        """compose's one-shot `migrate`, restarted on failure (bounded) as compose would."""
        for attempt in range(1, MIGRATE_ATTEMPTS_MAX + 1):
            self.start("migrate")
            try:
                code = self.processes["migrate"].wait(MIGRATE_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.stop("migrate")
                code = -1
            if code == 0:
                say(f"migrate completed (attempt {attempt})")
                return
            time.sleep(MIGRATE_PAUSE_S)
        raise RuntimeError(f"migrate failed {MIGRATE_ATTEMPTS_MAX} times; see {self.log_path('migrate')}")


def signal_group(pid: int, number: int) -> None:
    try:
        os.killpg(pid, number)
    except ProcessLookupError:
        pass
