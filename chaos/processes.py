"""The real processes a chaos run starts and hurts: coordinators (`wallet serve`) and shards."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from launchers.postgres import LocalCluster

READY_TIMEOUT_S = 30.0
READY_POLL_S = 0.1
STOP_TIMEOUT_S = 20.0
WALLET = str(Path(sys.executable).parent / "wallet")


class Coordinator:
    """One `wallet serve` subprocess on a fixed port; restartable, killable, optionally
    armed with a fault point (WALLET_FAULT_POINT) that makes it SIGKILL itself."""

    def __init__(
        self, index: int, port: int, topology_path: Path, workdir: Path, extra_env: dict[str, str] | None = None
    ) -> None:
        self.index = index
        self.port = port
        self.topology_path = topology_path
        self.workdir = workdir
        self.extra_env = dict(extra_env or {})
        self.process: subprocess.Popen[bytes] | None = None
        self.armed: str | None = None
        self.starts = 0
        self.log_offset = 0  # where this start's lines begin in the log

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / f"coordinator-{self.index}.log"

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, fault_point: str | None = None) -> None:
        assert not self.alive(), f"coordinator {self.index} is already running"
        environment = {
            **os.environ,
            **self.extra_env,
            "WALLET_HOME": str(self.workdir),
            "WALLET_TOPOLOGY": str(self.topology_path),
            "WALLET_PORT": str(self.port),
        }
        environment.pop("WALLET_FAULT_POINT", None)
        if fault_point is not None:
            environment["WALLET_FAULT_POINT"] = fault_point
        self.armed = fault_point
        self.log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log:
            log.write(f"--- start {self.starts} fault_point={fault_point}\n".encode())
            self.process = subprocess.Popen([WALLET, "serve"], env=environment, stdout=log, stderr=subprocess.STDOUT)
        self.starts += 1

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> bool:
        """True once /healthz answers; False if the process died or the time ran out (a
        shard may be down: serve refuses to start without every pool)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.alive():
                return False
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return True
            except httpx.HTTPError:
                pass
            time.sleep(READY_POLL_S)
        return False

    def kill(self) -> None:
        """SIGKILL: a power cut, nothing is flushed or finished. Its HTTP and relay processes
        stop once they see it gone; the port is free again when they have."""
        if self.alive():
            assert self.process is not None
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()
        self.wait_port_free()

    def wait_port_free(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while not can_listen(self.port) and time.monotonic() < deadline:
            time.sleep(0.05)

    def stop(self) -> None:
        """A clean stop (Ctrl-C), then SIGKILL if it does not come."""
        if self.alive():
            assert self.process is not None
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.kill()

    def killed_itself(self) -> bool:
        return self.process is not None and self.process.poll() == -signal.SIGKILL

    def relay_killed_itself(self) -> bool:
        """The relay runs in a process of its own (`wallet serve` starts it and, when it dies,
        starts it again, saying so in its log): an armed relay step kills that process."""
        if not self.log_path.exists():
            return False
        with open(self.log_path, "rb") as log:
            log.seek(self.log_offset)
            return b"ledger relay process died by signal 9" in log.read()


def can_listen(port: int) -> bool:
    """Whether `wallet serve` could bind `port` now (it binds with SO_REUSEADDR, so closed
    connections lingering in TIME_WAIT do not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def shard_pids(cluster: LocalCluster, shard: str) -> list[int]:
    """The postmaster of a shard and every process it forked (backends, checkpointer...)."""
    pid_file = cluster.server(shard).data_dir / "postmaster.pid"
    postmaster = int(pid_file.read_text().split("\n", 1)[0])
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            # /proc/<pid>/stat: "pid (comm) state ppid ..."; comm may hold spaces.
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == postmaster:
            children.append(int(entry.name))
    return [postmaster, *children]


def pause_shard(cluster: LocalCluster, shard: str) -> list[int]:
    """SIGSTOP a whole shard: it keeps its sockets open and answers nothing."""
    pids = shard_pids(cluster, shard)
    for pid in pids:
        signal_quietly(pid, signal.SIGSTOP)
    return pids


def resume_shard(pids: list[int]) -> None:
    for pid in pids:
        signal_quietly(pid, signal.SIGCONT)


def signal_quietly(pid: int, number: int) -> None:
    try:
        os.kill(pid, number)
    except ProcessLookupError:
        pass
