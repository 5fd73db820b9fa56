"""`wallet serve --local` (what `make run` runs) as a real process: serves, survives a
shard outage with clear 503s, stops everything on Ctrl-C, and reuses its data."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from launchers.postgres import free_port
from tests.helpers import REPOSITORY, code_blocks, make_home

WALLET = str(Path(sys.executable).parent / "wallet")
START_TIMEOUT_S = 120


def start(home: Path, port: int) -> subprocess.Popen[str]:
    environment = {**os.environ, "WALLET_HOME": str(home), "WALLET_PORT": str(port)}
    return subprocess.Popen(
        [WALLET, "serve", "--local"], env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def wait_ready(process: subprocess.Popen[str], url: str) -> dict[str, str]:
    """Waits for /readyz; returns admin headers from the token `serve --local` prints."""
    deadline = time.monotonic() + START_TIMEOUT_S
    token = None
    assert process.stdout is not None
    while token is None:
        line = process.stdout.readline()
        assert line, "serve exited before printing its admin token"
        if line.startswith("admin token"):
            token = line.rsplit(": ", 1)[1].strip()
    while time.monotonic() < deadline:
        assert process.poll() is None, f"serve exited early:\n{process.stdout.read() if process.stdout else ''}"
        try:
            if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                return {"Authorization": f"Bearer {token}"}
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError("serve did not become ready")


def interrupt(process: subprocess.Popen[str]) -> str:
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 0, output
    return output


def servers_running(home: Path) -> list[Path]:
    return sorted(home.glob("shards/*/postmaster.pid"))


def first_steps(process: subprocess.Popen[str], url: str) -> tuple[str, str]:
    """The admin token and the first command `serve --local` prints, once it serves."""
    assert process.stdout is not None
    lines: list[str] = []
    while len(lines) < 3:
        line = process.stdout.readline()
        assert line, f"serve exited before its first steps: {lines}"
        if not line.startswith("{"):  # the JSON log lines share the terminal
            lines.append(line.strip())
    assert lines[0] == f"serving the wallet API on {url} (Ctrl-C stops)", lines
    assert lines[1].startswith("admin token"), lines
    return lines[1].rsplit(": ", 1)[1], lines[2]


def run_readme_walk(url: str, environment: dict[str, str]) -> None:
    """The README's curl walk as a user runs it, each answer held to the `# -> {...}` the
    README shows for it."""
    (walk,) = [text for language, text in code_blocks(REPOSITORY / "README.md") if language == "sh" and "curl" in text]
    expected: dict[int, str] = {}
    curls = 0
    for line in walk.splitlines():
        curls += line.startswith("curl")
        if "# -> " in line:
            expected[curls] = line.split("# -> ", 1)[1]
    script = walk.replace("localhost:8000", url.removeprefix("http://")).replace(".venv/bin/wallet", WALLET)
    script = script.replace("curl -s ", "curl -s -w '\\n' ")
    ran = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script], env=environment, capture_output=True, text=True, timeout=120
    )
    assert ran.returncode == 0, ran.stderr
    answers = [json.loads(line) for line in ran.stdout.splitlines() if line.strip()]
    assert len(answers) == curls, ran.stdout
    for number, shown in expected.items():
        for key, value in re.findall(r'"(\w+)":("[^"]*"|\d+)', shown):
            assert answers[number - 1].get(key) == json.loads(value), (number, shown, answers[number - 1])


def run_readme_client(url: str, token: str) -> str:
    """The README's Python client snippet, as a file of its own; what it prints."""
    (snippet,) = [text for language, text in code_blocks(REPOSITORY / "README.md") if language == "python"]
    ran = subprocess.run(
        [sys.executable, "-c", snippet.replace("http://127.0.0.1:8000", url)],
        env={**os.environ, "WALLET_TOKEN": token},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ran.returncode == 0, ran.stderr
    return ran.stdout.strip()


@pytest.mark.cluster
def test_serve_local_runs_the_readme_survives_a_shard_outage_and_reuses_its_data() -> None:
    """What `make run` runs, as a user meets it: "serving" once bound, then a first command
    that works on a fresh home; the README's curl walk and Python client snippet, as
    written; the ledger anchored by default. Then a shard lost (503, then recovery), Ctrl-C
    stopping every server, and a second start on the same data with the old token."""
    home = make_home("serve")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    environment = {**os.environ, "WALLET_HOME": str(home), "WALLET_PORT": str(port)}
    process = start(home, port)
    try:
        token, first = first_steps(process, url)
        admin = {"Authorization": f"Bearer {token}"}
        assert len(servers_running(home)) == 5  # 4 shards and the ledger
        printed = subprocess.run(
            [*shlex.split(first), "-s", "-o", "/dev/null", "-w", "%{http_code}"], capture_output=True, text=True
        )
        assert printed.stdout == "201", (first, printed.stdout, printed.stderr)
        assert httpx.get(f"{url}/v1/accounts/alice").status_code == 401

        run_readme_walk(url, environment)
        assert run_readme_client(url, token) == "success tcc confirmed"
        # `wallet token issue` signs with the secret `serve --local` keeps in the home.
        issued = subprocess.run(
            [WALLET, "token", "issue", "--owner", "alice"], env=environment, capture_output=True, text=True, timeout=60
        )
        assert issued.returncode == 0, issued.stderr
        alice = {"Authorization": f"Bearer {issued.stdout.strip()}"}
        assert httpx.get(f"{url}/v1/accounts/alice", headers=alice).json()["balance"] == "87.50"
        # Tamper evidence is on by default: the relay signed every stream's head at its start.
        assert (home / "ledger-signing-key.pem").exists()
        verify = subprocess.run(
            [WALLET, "ledger", "verify"], env=environment, capture_output=True, text=True, timeout=120
        )
        assert verify.returncode == 0 and "anchors checked" in verify.stdout, verify.stdout + verify.stderr

        # Take alice's shard away: a clear 503, and service resumes once it is back.
        from launchers.postgres import LocalCluster
        from shard_router.file_store import FileTopologyStore

        cluster = LocalCluster(home, shard_count=4)
        cluster.servers = cluster._known_servers()
        shard = FileTopologyStore(home / "topology.json").load().shard_of("alice")
        cluster.stop_shard(shard)
        down = httpx.get(f"{url}/v1/accounts/alice", headers=admin)
        assert down.status_code == 503 and down.json()["code"] == "shard_unavailable"
        assert httpx.get(f"{url}/readyz", timeout=10).status_code == 503
        cluster.start_shard(shard)
        deadline = time.monotonic() + 30
        while httpx.get(f"{url}/v1/accounts/alice", headers=admin).status_code != 200:
            assert time.monotonic() < deadline, "the shard's pool did not reconnect"
            time.sleep(0.2)

        output = interrupt(process)
        assert "local cluster stopped" in output
        assert servers_running(home) == [], "Ctrl-C must stop every shard server"

        process = start(home, port)
        wait_ready(process, url)
        again = httpx.get(f"{url}/v1/accounts/alice", headers=alice)  # the old token still works
        assert again.status_code == 200 and again.json()["balance"] == "87.50"
        interrupt(process)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        from launchers.postgres import LocalCluster

        leftover = LocalCluster(home, shard_count=4)
        leftover.stop()
        shutil.rmtree(home, ignore_errors=True)


def children_of(pid: int) -> list[tuple[int, str]]:
    """(pid, command line) of the processes whose parent is `pid`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            command = (entry / "cmdline").read_text().replace("\0", " ")
        except (OSError, IndexError):
            continue
        if parent == pid:
            found.append((int(entry.name), command))
    return found


@pytest.mark.cluster
def test_serve_runs_http_and_the_relay_in_processes_that_end_with_it() -> None:
    """Protects the process layout of `wallet serve`: HTTP in a process of its own, the relay in
    another (events reach the ledger while serving), and neither outlives the engine: a
    SIGKILL of the engine ends both and frees the port."""
    home = make_home("serve-processes")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = start(home, port)
    try:
        admin = wait_ready(process, url)
        children = children_of(process.pid)
        assert any("coordinator.api.front" in command for _, command in children), children
        assert any("ledger relay --follow" in command for _, command in children), children
        httpx.post(
            f"{url}/v1/accounts", json={"account_id": "carol", "owner": "carol", "currency": "USD"}, headers=admin
        ).raise_for_status()
        httpx.post(
            f"{url}/v1/accounts/carol/deposits",
            headers=admin,
            json={"amount": "5.00", "currency": "USD", "transaction_id": str(uuid.uuid4())},
        ).raise_for_status()
        deadline = time.monotonic() + 30
        while not httpx.get(f"{url}/v1/accounts/carol/transactions", headers=admin).json()["items"]:
            assert time.monotonic() < deadline, "the relay process never moved the deposit into the ledger"
            time.sleep(0.2)

        process.kill()
        process.wait()
        deadline = time.monotonic() + 15
        while any(Path(f"/proc/{pid}").exists() for pid, _ in children):
            assert time.monotonic() < deadline, f"children outlived the engine: {children_of(1)}"
            time.sleep(0.1)
        from chaos.processes import can_listen

        assert can_listen(port), "the port is free once the engine and its children are gone"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        from launchers.postgres import LocalCluster

        LocalCluster(home, shard_count=4).stop()
        shutil.rmtree(home, ignore_errors=True)


@pytest.mark.cluster
def test_a_busy_port_is_refused_before_anything_starts() -> None:
    """Protects `make run` from starting five PostgreSQL servers it cannot serve: with the port
    taken, serve says which port and which setting changes it, in one line, exit 2, and
    leaves nothing running."""
    import socket

    home = make_home("serve-busy")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        completed = subprocess.run(
            [WALLET, "serve", "--local"],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "WALLET_HOME": str(home), "WALLET_PORT": str(port)},
        )
    try:
        assert completed.returncode == 2, completed.stdout + completed.stderr
        assert completed.stderr.strip() == (
            f"wallet: error: port {port} on 127.0.0.1 is in use: stop what holds it, or "
            "serve on another with WALLET_PORT (or --port)"
        ), completed.stderr
        assert servers_running(home) == [] and not (home / "shards").exists(), "nothing was started"
    finally:
        shutil.rmtree(home, ignore_errors=True)


@pytest.mark.cluster
def test_several_http_processes_share_one_engine_and_its_state() -> None:
    """Protects per-process state with `--workers 2`: a token's rate limit is one bucket however
    its requests spread over the HTTP processes, and /metrics counts every process's requests
    (each hands its observations to the engine within OBSERVE_EVERY_S)."""
    home = make_home("serve-workers")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    environment = {
        **os.environ,
        "WALLET_HOME": str(home),
        "WALLET_PORT": str(port),
        "WALLET_RATE_BURST": "5",
        "WALLET_RATE_PER_S": "0.01",
    }
    process = subprocess.Popen(
        [WALLET, "serve", "--local", "--workers", "2"],
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        admin = wait_ready(process, url)
        assert sum("coordinator.api.front" in command for _, command in children_of(process.pid)) == 2
        issued = subprocess.run(
            [WALLET, "token", "issue", "--owner", "dave"], env=environment, capture_output=True, text=True, timeout=60
        )
        dave = {"Authorization": f"Bearer {issued.stdout.strip()}"}
        missing = f"{url}/v1/transfers/{uuid.uuid4()}"
        # A fresh connection each: the kernel spreads them over both processes.
        answers = [httpx.get(missing, headers={**dave, "Connection": "close"}).status_code for _ in range(8)]
        assert answers == [404] * 5 + [429] * 3, answers
        from coordinator.api.engine_link import OBSERVE_EVERY_S

        time.sleep(2 * OBSERVE_EVERY_S)  # each HTTP process hands its observations over at least this often
        text = httpx.get(f"{url}/metrics", headers=admin).text
        counted = sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith('wallet_http_requests_total{route="/v1/transfers/{transaction_id}"')
        )
        assert counted == 8, text
        interrupt(process)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        from launchers.postgres import LocalCluster

        LocalCluster(home, shard_count=4).stop()
        shutil.rmtree(home, ignore_errors=True)
