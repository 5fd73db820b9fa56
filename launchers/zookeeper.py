"""A standalone ZooKeeper server for development and tests: loopback, a free port, its own
data directory; stopped (or killed) with the process object. Production runs an ensemble
(docker/)."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

ZOOKEEPER_CLASSPATH = "/etc/zookeeper/conf:/usr/share/java/*"
START_TIMEOUT_S = 60
# 2 x tick is the shortest session a client may ask for, 20 x tick the longest.
TICK_MS = 500


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def is_installed() -> bool:
    return Path("/usr/share/java/zookeeper.jar").exists()


class LocalZooKeeper:
    def __init__(self, home: Path, port: int | None = None) -> None:
        self.home = Path(home)
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def hosts(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> str:
        assert is_installed(), "ZooKeeper is not installed: apt-get install -y zookeeper (make test does it)"
        data = self.home / "data"
        data.mkdir(parents=True, exist_ok=True)
        config = self.home / "zoo.cfg"
        config.write_text(
            f"tickTime={TICK_MS}\ninitLimit=10\nsyncLimit=5\ndataDir={data}\n"
            f"clientPort={self.port}\nclientPortAddress=127.0.0.1\nadmin.enableServer=false\n"
            "4lw.commands.whitelist=ruok\nmaxClientCnxns=200\n"
        )
        log = open(self.home / "zookeeper.log", "ab")
        self.process = subprocess.Popen(
            [
                "java",
                "-Xmx256m",
                "-cp",
                ZOOKEEPER_CLASSPATH,
                "org.apache.zookeeper.server.quorum.QuorumPeerMain",
                str(config),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"ZooKeeper exited with {self.process.returncode}; see {self.home / 'zookeeper.log'}"
                )
            if self._ok():
                return self.hosts
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"ZooKeeper did not answer within {START_TIMEOUT_S} s; see {self.home / 'zookeeper.log'}")

    def answers(self) -> bool:
        """A server (this one, or one a previous run left) answers on the port."""
        return self._ok()

    def _ok(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as connection:
                connection.sendall(b"ruok")
                return connection.recv(4) == b"imok"
        except OSError:
            return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
