"""Operating errors are errors: a bad setting, a short secret, a wrong argument, alembic run
without a shard each get one line naming what is wrong and what is allowed, exit status 2
(problem+json over HTTP), never a traceback or an AssertionError, and the same under
python -O, which removes asserts."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest

from coordinator.api.app import build_app
from coordinator.cli.main import main
from coordinator.service.wallet import WalletService
from core.domain.errors import ConfigurationError
from core.runtime import fault_points
from core.runtime.settings import Settings
from shard_router.topology import Topology
from tests.helpers import REPOSITORY, TEST_SECRET, accounts_on, assert_problem, batches_held, bearer

SHORT_SECRET = "too-short"


def wallet(
    arguments: list[str], home: Path, optimize: bool = False, **environment: str
) -> subprocess.CompletedProcess[str]:
    """`wallet ...` in a fresh process with only the given WALLET_* settings."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("WALLET_")}
    env.update({"WALLET_HOME": str(home), **environment})
    command = [sys.executable, *(["-O"] if optimize else []), "-m", "coordinator.cli", *arguments]
    return subprocess.run(command, cwd=REPOSITORY, env=env, capture_output=True, text=True, timeout=60)


def assert_refused(run: subprocess.CompletedProcess[str], message: str) -> None:
    assert run.returncode == 2, (run.returncode, run.stdout, run.stderr)
    assert message in run.stderr, run.stderr
    assert "Traceback" not in run.stderr and "AssertionError" not in run.stderr, run.stderr
    assert len(run.stderr.strip().splitlines()) <= 3, f"one line (after argparse's usage), not: {run.stderr}"


# (arguments, settings, what the operator reads)
REFUSALS = [
    (
        ["token", "issue", "--owner", "ops"],
        {"WALLET_AUTH_SECRET": SHORT_SECRET},
        "WALLET_AUTH_SECRET must be at least 32 bytes",
    ),
    (["serve"], {"WALLET_AUTH_SECRET": SHORT_SECRET}, "WALLET_AUTH_SECRET must be at least 32 bytes"),
    (["serve"], {}, "no token secret: set WALLET_AUTH_SECRET"),
    (["serve"], {"WALLET_RATE_PER_S": "fast"}, "WALLET_RATE_PER_S must be a number such as 0.5 or 50, got 'fast'"),
    (["serve"], {"WALLET_RATE_PER_S": "0"}, "WALLET_RATE_PER_S must be a number above 0"),
    (["serve"], {"WALLET_PORT": "eighty"}, "WALLET_PORT must be a whole number, got 'eighty'"),
    (["serve"], {"WALLET_MODE": "3pc"}, "WALLET_MODE must be one of 2pc, tcc, saga, got '3pc'"),
    (["serve"], {"WALLET_BATCH_SIZE_MAX": "0"}, "WALLET_BATCH_SIZE_MAX must be in 1..10000, got 0"),
    (["serve"], {"WALLET_ZK_SESSION_TIMEOUT_MS": "100"}, "WALLET_ZK_SESSION_TIMEOUT_MS must be in 2000..60000"),
    (["serve"], {"WALLET_ZK_ROOT": "wallet"}, "WALLET_ZK_ROOT must be an absolute znode path"),
    (["serve"], {"WALLET_LOG_FORMAT": "xml"}, "WALLET_LOG_FORMAT must be one of json, text, got 'xml'"),
    (["serve"], {"WALLET_RELAY": "maybe"}, "WALLET_RELAY must be one of on, off, got 'maybe'"),
    (["serve"], {"WALLET_FAULT_POINT": "2pc.nowhere"}, "WALLET_FAULT_POINT must be one of 2pc.after_all_prepares"),
    (["serve"], {"WALLET_LEDGER_CHECKPOINT_S": "-1"}, "WALLET_LEDGER_CHECKPOINT_S must be in 0..86400"),
    (["serve"], {"WALLET_LEDGER_VERIFY_S": "90000"}, "WALLET_LEDGER_VERIFY_S must be in 0..86400"),
    (
        ["serve"],
        {"WALLET_AUTH_PUBLIC_KEY_FILE": "/nonexistent/key.pem"},
        "WALLET_AUTH_PUBLIC_KEY_FILE: cannot read /nonexistent/key.pem",
    ),
    (
        ["token", "issue", "--owner", "ops", "--ttl-hours", "0"],
        {"WALLET_AUTH_SECRET": TEST_SECRET},
        "--ttl-hours must be in (0, 8784], got 0.0",
    ),
    (
        ["token", "issue", "--owner", "ops", "--private-key", "/nonexistent/key.pem"],
        {},
        "--private-key: cannot read /nonexistent/key.pem",
    ),
    (["dev", "up", "--shards", "100"], {}, "argument --shards: must be a whole number in 1..64, got '100'"),
    (["dev", "up", "--replicas", "9"], {}, "argument --replicas: must be a whole number in 0..4, got '9'"),
    (
        ["dev", "up", "--replicas", "1"],
        {"WALLET_PATRONI_PATH": "/nonexistent/patroni"},
        "Patroni is not installed in /nonexistent/patroni",
    ),
    (["recover", "--abort-after-s", "-1"], {}, "argument --abort-after-s: must be a number of seconds in 0..86400"),
    (["serve", "--port", "99999"], {}, "argument --port: must be a port number in 1..65535, got '99999'"),
    (["db", "upgrade"], {}, "choose one: --all or --shard NAME"),
    (["topology", "show"], {}, "no topology file at"),
]


@pytest.mark.parametrize(
    ("arguments", "environment", "message"),
    REFUSALS,
    ids=[" ".join(arguments) + " " + ",".join(env) for arguments, env, _ in REFUSALS],
)
def test_wallet_refuses_in_one_line(
    arguments: list[str],
    environment: dict[str, str],
    message: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """In this process (fast); the tests below run some of them in a process of their own."""
    for key in [key for key in os.environ if key.startswith("WALLET_")]:
        monkeypatch.delenv(key)
    for key, value in {"WALLET_HOME": str(tmp_path), **environment}.items():
        monkeypatch.setenv(key, value)
    try:
        status = main(arguments)
    except SystemExit as exit:  # argparse's own refusal
        status = int(exit.code or 0)
    captured = capsys.readouterr()
    assert_refused(subprocess.CompletedProcess(arguments, status, captured.out, captured.err), message)


def test_wallet_refuses_in_a_process_of_its_own(tmp_path: Path) -> None:
    """The same as a user sees it: the exit status of the process, and its whole stderr."""
    assert_refused(wallet(["serve"], tmp_path, WALLET_MODE="3pc"), "WALLET_MODE must be one of 2pc, tcc, saga")
    assert_refused(wallet(["dev", "up", "--shards", "100"], tmp_path), "argument --shards: must be a whole number")


def test_the_refusals_survive_python_dash_o(tmp_path: Path) -> None:
    """python -O drops asserts: the secret's length (once an assert) is not one, so it still refuses."""
    assert_refused(
        wallet(["token", "issue", "--owner", "ops"], tmp_path, optimize=True, WALLET_AUTH_SECRET=SHORT_SECRET),
        "WALLET_AUTH_SECRET must be at least",
    )


def test_a_fractional_rate_is_a_rate(tmp_path: Path) -> None:
    """WALLET_RATE_PER_S=0.5 is one request every two seconds, not an error."""
    settings = Settings.from_environment({"WALLET_RATE_PER_S": "0.5", "WALLET_ADMIN_RATE_PER_S": "12.5"})
    assert (settings.rate_per_s, settings.admin_rate_per_s) == (0.5, 12.5)


def test_fault_points_are_armed_by_settings_not_at_import() -> None:
    """Importing the module reads nothing; the name is checked by Settings and armed by the
    process that starts the service."""
    probe = subprocess.run(
        [sys.executable, "-c", "import core.runtime.fault_points as f; print(f._armed)"],
        cwd=REPOSITORY,
        env={**os.environ, "WALLET_FAULT_POINT": "2pc.after_decision"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert probe.returncode == 0 and probe.stdout.strip() == "None", probe.stderr
    assert Settings.from_environment({"WALLET_FAULT_POINT": "2pc.after_decision"}).fault_point == "2pc.after_decision"
    with pytest.raises(ConfigurationError, match="WALLET_FAULT_POINT must be one of"):
        Settings.from_environment({"WALLET_FAULT_POINT": "everywhere"})
    fault_points.arm(None)


def test_the_app_refuses_a_short_secret(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="WALLET_AUTH_SECRET must be at least 32 bytes"):
        build_app(Settings(home=tmp_path, auth_secret=SHORT_SECRET))
    with pytest.raises(ConfigurationError, match="no token secret"):
        build_app(Settings(home=tmp_path))


def test_alembic_without_a_shard_says_how_to_choose_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """alembic's own command line, in this process: the environment refuses before any connection."""
    from alembic.config import CommandLine

    def alembic(arguments: list[str], topology_path: Path) -> subprocess.CompletedProcess[str]:
        monkeypatch.setenv("WALLET_TOPOLOGY", str(topology_path))
        try:
            CommandLine().main(["-c", str(REPOSITORY / "alembic.ini"), *arguments])
            status = 0
        except SystemExit as exit:
            status = int(exit.code or 0)
        captured = capsys.readouterr()
        return subprocess.CompletedProcess(arguments, status, captured.out, captured.err)

    topology_path = tmp_path / "topology.json"
    shards = {"shard0": "postgresql://wallet@127.0.0.1:1/wallet"}
    topology_path.write_text(json.dumps(Topology.even(shards).to_document()))
    assert_refused(alembic(["upgrade", "head"], topology_path), "choose a shard: alembic -x shard=<name> upgrade head")
    assert_refused(
        alembic(["-x", "shard=shard9", "upgrade", "head"], topology_path), "shard 'shard9' is not in the topology"
    )
    assert_refused(alembic(["-n", "ledger", "upgrade", "head"], topology_path), "names no ledger database")
    assert_refused(alembic(["-x", "shard=shard0", "upgrade", "head"], tmp_path / "missing.json"), "no topology file at")


async def test_a_deployment_without_a_ledger_says_so(topology: Topology, settings: Settings) -> None:
    """The ledger's read side on a topology with no ledger: 501 ledger_not_configured, not a
    validation error of the request."""
    without = Topology(topology.version, topology.shards, topology.slots, topology.overrides, {})
    async with WalletService(without, settings) as service:
        app = build_app(settings, service=service)
        account_id = accounts_on(topology, "shard0", 1)[0]
        await service.create_account(account_id, "owner", "USD")
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://test", headers=bearer()
        ) as client:
            response = await client.get(f"/v1/accounts/{account_id}/balance", params={"at": "2026-11-23T12:00:00Z"})
            assert_problem(response, 501, "ledger_not_configured")
            response = await client.get(f"/v1/accounts/{account_id}/transactions")
            assert_problem(response, 501, "ledger_not_configured")


async def test_too_many_transfers_in_flight_is_overloaded_not_a_shard(
    service: WalletService, topology: Topology, settings: Settings
) -> None:
    """A coordinator at its in-flight bound answers 503 overloaded with Retry-After; no shard
    is at fault, and the transfer can be retried with the same id."""
    app = build_app(settings, service=service)
    sender, receiver = accounts_on(topology, "shard1", 2)
    for account_id in (sender, receiver):
        await service.create_account(account_id, "owner", "USD")
    await service.deposit(sender, "10.00", str(uuid.uuid4()))
    service.inflight.size_max = 1
    body = {"from_account": sender, "to_account": receiver, "amount": "1.00", "currency": "USD"}
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://test", headers=bearer()
        ) as client:
            with batches_held(service, "shard1") as release:
                first = asyncio.create_task(
                    client.post("/v1/wallet/balance_transfer", json={**body, "transaction_id": str(uuid.uuid4())})
                )
                while not len(service.inflight):
                    await asyncio.sleep(0.01)
                refused = await client.post(
                    "/v1/wallet/balance_transfer", json={**body, "transaction_id": str(uuid.uuid4())}
                )
                release.set()
                assert (await first).status_code == 200
            assert_problem(refused, 503, "overloaded")
            assert refused.headers["Retry-After"] == "1"
            assert "in flight" in refused.json()["detail"]
    finally:
        service.inflight.size_max = 100_000
