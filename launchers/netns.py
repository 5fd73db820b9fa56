"""A private network of hosts on one machine: one Linux network namespace per host, each
joined by a veth pair to one bridge that lives in a namespace of its own (a star), on a
subnet this module picks. Names resolve through a hosts file per namespace
(`/etc/netns/<name>/hosts`, which `ip netns exec` mounts over /etc/hosts).

Why it is shaped this way:
- The bridge sits in its own namespace, not the machine's: the machine's namespace gets no
  interface, no address and no route, and no namespace gets a default route, so nothing
  sent inside can leave (a name that is not in the hosts file fails to resolve; an address
  outside the subnet is unreachable at once).
- A partition is the bridge's end of a host's veth set down: frames to and from the host
  are dropped silently, as a switch port that died drops them, so peers see timeouts, not
  refusals.
- Every namespace this module makes is marked (a file of its name in MARKERS); only
  those are ever torn down (a stale run's included), and one run holds the machine's
  lock at a time. Teardown SIGKILLs whatever still runs in the namespaces (the run's own
  processes: nothing else can be in them), deletes them, and removes the files.

Needs root (`ip netns`), iproute2 and a kernel with veth and bridge.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from core.domain.errors import ConfigurationError

SUBNET = ipaddress.IPv4Network("10.213.0.0/24")
SWITCH = "wallet-switch"  # the namespace holding the bridge
BRIDGE = "br0"
NETNS_ETC = Path("/etc/netns")
NETNS_RUN = Path("/run/netns")
# Not beside the hosts file: `ip netns exec` mounts every file of /etc/netns/<name> over /etc.
MARKERS = Path("/run/wallet-multihost")
LOCK_PATH = MARKERS / "lock"
LOCK_WAIT_S = 900.0  # another run's whole length, and then some
LOCK_POLL_S = 1.0
INTERFACE_NAME_MAX = 15  # IFNAMSIZ - 1: a host's veth end in the switch is named after it
COMMAND_TIMEOUT_S = 30


class StarNetwork:
    """`hosts` each get a namespace of their name and the next address of `subnet`."""

    def __init__(self, hosts: Sequence[str], subnet: ipaddress.IPv4Network = SUBNET) -> None:
        assert len(set(hosts)) == len(hosts), f"host names repeat: {sorted(hosts)}"
        assert SWITCH not in hosts, f"{SWITCH} is the switch's namespace"
        for name in hosts:
            assert 0 < len(name) <= INTERFACE_NAME_MAX and name.replace("-", "").isalnum(), (
                f"host name {name!r}: 1..{INTERFACE_NAME_MAX} letters, digits and dashes (it names an interface)"
            )
        free = list(subnet.hosts())
        assert len(hosts) <= len(free), f"{subnet} has {len(free)} addresses for {len(hosts)} hosts"
        self.subnet = subnet
        self.addresses = dict(zip(hosts, free, strict=False))
        self.lock: int | None = None

    # -- what it is (pure) -------------------------------------------------------------------
    @property
    def namespaces(self) -> list[str]:
        return [SWITCH, *self.addresses]

    def hosts_file(self) -> str:
        lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost"]
        lines += [f"{address}\t{name}" for name, address in self.addresses.items()]
        return "\n".join(lines) + "\n"

    def exec_command(self, host: str, command: Sequence[str]) -> list[str]:
        """`command` run in `host`'s namespace, under its hostname (a UTS namespace of its own)."""
        assert host in self.addresses, f"no host {host!r} in this network"
        named = ["sh", "-c", 'hostname "$0" && exec "$@"', host]
        return ["ip", "netns", "exec", host, "unshare", "--uts", "--", *named, *command]

    def create_commands(self) -> list[list[str]]:
        """The `ip` commands that build the star, in order."""
        commands = [["ip", "netns", "add", name] for name in self.namespaces]
        commands += [
            ["ip", "-n", SWITCH, "link", "add", "name", BRIDGE, "type", "bridge"],
            ["ip", "-n", SWITCH, "link", "set", "dev", BRIDGE, "up"],
        ]
        prefix = self.subnet.prefixlen
        for name, address in self.addresses.items():
            commands += [
                [
                    "ip",
                    "-n",
                    SWITCH,
                    "link",
                    "add",
                    "name",
                    name,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    "eth0",
                    "netns",
                    name,
                ],
                ["ip", "-n", SWITCH, "link", "set", "dev", name, "master", BRIDGE, "up"],
                ["ip", "-n", name, "addr", "add", f"{address}/{prefix}", "dev", "eth0"],
                ["ip", "-n", name, "link", "set", "dev", "eth0", "up"],
                ["ip", "-n", name, "link", "set", "dev", "lo", "up"],
            ]
        return commands

    def link_command(self, host: str, up: bool) -> list[str]:
        assert host in self.addresses, f"no host {host!r} in this network"
        return ["ip", "-n", SWITCH, "link", "set", "dev", host, "up" if up else "down"]

    # -- doing it (root) ---------------------------------------------------------------------
    def create(self) -> None:
        """Take the machine's lock, tear down a stale run's namespaces, build the star."""
        if os.geteuid() != 0:
            raise ConfigurationError("a multi-host run needs root: network namespaces (ip netns) are made as root")
        if shutil.which("ip") is None:
            raise ConfigurationError("`ip` not found: apt-get install -y iproute2")
        self._lock()
        for name in self.namespaces:
            if (NETNS_RUN / name).exists():
                if not (MARKERS / name).exists():
                    raise ConfigurationError(
                        f"a network namespace {name!r} exists that this tool did not make: "
                        f"`ip netns delete {name}` if it is a leftover, or run elsewhere"
                    )
                self._remove(name)
        for name in self.namespaces:
            (MARKERS / name).write_text("made by a multi-host run; torn down when it ends\n")
            if name != SWITCH:
                folder = NETNS_ETC / name
                folder.mkdir(parents=True, exist_ok=True)
                (folder / "hosts").write_text(self.hosts_file())
                (folder / "resolv.conf").write_text("# no DNS: names come from the hosts file beside this one\n")
        for command in self.create_commands():
            run(command)

    def cut(self, host: str) -> None:
        run(self.link_command(host, up=False))

    def restore(self, host: str) -> None:
        run(self.link_command(host, up=True))

    def destroy(self) -> None:
        """Everything `create` made, whatever state it is in (also after a failed create);
        nothing without the lock (another run's namespaces are that run's)."""
        if self.lock is None:
            return
        try:
            for name in self.namespaces:
                if (MARKERS / name).exists():
                    self._remove(name)
            if NETNS_ETC.exists() and not any(NETNS_ETC.iterdir()):
                NETNS_ETC.rmdir()
        finally:
            self._unlock()

    def _remove(self, name: str) -> None:
        if (NETNS_RUN / name).exists():
            kill_all_in(name)
            subprocess.run(["ip", "netns", "delete", name], capture_output=True, timeout=COMMAND_TIMEOUT_S)
        shutil.rmtree(NETNS_ETC / name, ignore_errors=True)
        (MARKERS / name).unlink(missing_ok=True)

    def _lock(self, wait_s: float = LOCK_WAIT_S) -> None:
        """One run at a time on a machine (the namespaces' names are the machine's): a second
        waits for the first, bounded."""
        deadline = time.monotonic() + wait_s
        while True:
            MARKERS.mkdir(parents=True, exist_ok=True)
            handle = os.open(LOCK_PATH, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(handle)
                if time.monotonic() > deadline:
                    raise ConfigurationError(
                        f"another multi-host run has held {LOCK_PATH} for over {wait_s:.0f} s: one run at a time"
                    ) from None
                time.sleep(LOCK_POLL_S)
                continue
            with contextlib.suppress(FileNotFoundError):
                if os.fstat(handle).st_ino == os.stat(LOCK_PATH).st_ino:
                    self.lock = handle
                    return
            os.close(handle)  # the holder removed the file as it released it: lock the next one

    def _unlock(self) -> None:
        if self.lock is not None:
            LOCK_PATH.unlink(missing_ok=True)  # before the release: the next run makes its own
            with contextlib.suppress(OSError):
                MARKERS.rmdir()  # when no namespace is left marked
            os.close(self.lock)  # closing releases the lock
            self.lock = None


def run(command: list[str]) -> None:
    completed = subprocess.run(command, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)
    if completed.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({completed.returncode}): {completed.stderr.strip()}")


def pids_in(namespace: str) -> list[int]:
    listed = subprocess.run(["ip", "netns", "pids", namespace], capture_output=True, text=True, timeout=10)
    return [int(pid) for pid in listed.stdout.split() if pid.isdigit()]


def kill_all_in(namespace: str) -> None:
    """SIGKILL every process in a namespace this module made (they can only be the run's)."""
    for _ in range(3):  # a process may fork while the first pass kills its parent
        pids = pids_in(namespace)
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
