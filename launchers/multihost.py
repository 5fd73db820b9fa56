"""A plan of docker/'s services (launchers/compose.py) running natively, each a process in
the network namespace of its compose hostname (launchers/netns.py), with the compose file's
ports and environment: started in compose's order, each kind once what it depends on is as
compose's conditions ask (ZooKeeper answering `ruok`; every Patroni cluster with a leader
and a streaming synchronous standby; the one-shots, `migrate` and `metrics-token`, completed,
retried as `restart: on-failure` retries them; the coordinators' /readyz; Prometheus's
/-/ready), stopped at the end. Each runs as the user its image runs as (IMAGE_USERS), its
volumes that user's.

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
    IMAGE_USERS,
    ONE_SHOT_KINDS,
    Kind,
    Plan,
    bound_files,
    command_of,
    environment_of,
    folder_of,
    patroni_config,
    zookeeper_config,
)
from launchers.netns import StarNetwork

READY_TIMEOUT_S = 240.0  # a cluster's first leader and synchronous standby, on a busy machine
POLL_S = 0.5
PROBE_TIMEOUT_S = 2.0
ONE_SHOT_ATTEMPTS_MAX = 20  # compose restarts `migrate` on failure until every cluster has a primary
ONE_SHOT_PAUSE_S = 3.0
ONE_SHOT_TIMEOUT_S = 300.0
STOP_TIMEOUT_S = 30.0
READY_PATHS: dict[Kind, str] = {"coordinator": "/readyz", "balancer": "/readyz", "prometheus": "/-/ready"}

T = TypeVar("T")


class Deployment:
    def __init__(self, plan: Plan, network: StarNetwork, home: Path, secret: str) -> None:
        self.plan = plan
        self.network = network
        self.home = home
        self.variables = {"WALLET_AUTH_SECRET": secret}  # compose's interpolation of the shell's
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.interrupted = threading.Event()  # set: every wait ends at its next poll (Ctrl-C)

    def log_path(self, name: str) -> Path:
        return self.home / "logs" / f"{name}.log"

    # -- files -----------------------------------------------------------------------------
    def prepare(self) -> None:
        """Every service's folder and files: volumes (owned by the user the service runs as),
        configurations, the docker/ files services mount."""
        (self.home / "logs").mkdir(parents=True, exist_ok=True)
        for path, text in bound_files(self.plan, self.home).items():
            path.write_text(text)
        for service in self.plan.services:
            folder = folder_of(service, self.home)
            folder.mkdir(parents=True, exist_ok=True)
            user = pwd.getpwnam(IMAGE_USERS[service.kind]) if service.kind in IMAGE_USERS else None
            for volume in service.volumes:
                source = volume.split(":")[0]
                if not source.startswith("./"):
                    (self.home / "volumes" / source).mkdir(parents=True, exist_ok=True)
                    if user is not None:
                        os.chown(self.home / "volumes" / source, user.pw_uid, user.pw_gid)
                        os.chmod(self.home / "volumes" / source, 0o700)
            if service.kind == "zookeeper":
                (folder / "data").mkdir(exist_ok=True)
                (folder / "data" / "myid").write_text(f"{service.environment['ZOO_MY_ID']}\n")
                (folder / "zoo.cfg").write_text(zookeeper_config(service, self.home))
            if service.kind == "member":
                assert user is not None
                (folder / "patroni.yml").write_text(json.dumps(patroni_config(service, self.home), indent=2) + "\n")
                for path in (folder, folder / "patroni.yml"):
                    os.chown(path, user.pw_uid, user.pw_gid)
                os.chmod(folder, 0o700)
        os.chmod(self.home, 0o755)  # postgres and nobody reach their folders through the run's

    # -- processes -------------------------------------------------------------------------
    def start(self, name: str) -> None:
        service = self.plan.service(name)
        assert not self.alive(name), f"{name} is already running"
        environment = environment_of(service, self.home, self.variables)
        user = ["runuser", "-u", IMAGE_USERS[service.kind], "--"] if service.kind in IMAGE_USERS else []
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
        for kinds in (
            ("balancer", "prometheus", "token", "relay", "coordinator", "migrate"),
            ("member",),
            ("zookeeper",),
        ):
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
        """The service's readiness answers 200 (a coordinator's /readyz, or the balancer's in
        front of them; Prometheus's /-/ready)."""
        service = self.plan.service(name)
        url = f"http://{name}:{service.ports[0]}{READY_PATHS[service.kind]}"
        try:
            with urllib.request.urlopen(url, timeout=PROBE_TIMEOUT_S) as answer:
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
            dead = [
                name
                for name in self.processes
                if not self.alive(name) and self.plan.service(name).kind not in ONE_SHOT_KINDS
            ]
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
        for service in self.plan.of_kind("migrate"):
            self.run_once(service.name, say)
        for service in [*self.plan.of_kind("coordinator"), *self.plan.of_kind("relay")]:
            self.start(service.name)
        for service in self.plan.of_kind("coordinator"):
            self.wait(f"{service.name} ready", partial(self.ready, service.name))
        for service in self.plan.of_kind("token"):
            self.run_once(service.name, say)
        for service in [*self.plan.of_kind("prometheus"), *self.plan.of_kind("balancer")]:
            self.start(service.name)
            self.wait(f"{service.name} ready", partial(self.ready, service.name))
        say("coordinators, relay, " + ("Prometheus, " if self.plan.of_kind("prometheus") else "") + "balancer up")

    def run_once(self, name: str, say: Callable[[str], None]) -> None:
        """A one-shot service (`migrate`, `metrics-token`), restarted on failure (bounded) as
        compose's `restart: on-failure` would, until it completes."""
        for attempt in range(1, ONE_SHOT_ATTEMPTS_MAX + 1):
            self.start(name)
            try:
                code = self.processes[name].wait(ONE_SHOT_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.stop(name)
                code = -1
            if code == 0:
                say(f"{name} completed (attempt {attempt})")
                return
            time.sleep(ONE_SHOT_PAUSE_S)
        raise RuntimeError(f"{name} failed {ONE_SHOT_ATTEMPTS_MAX} times; see {self.log_path(name)}")


def signal_group(pid: int, number: int) -> None:
    try:
        os.killpg(pid, number)
    except ProcessLookupError:
        pass
