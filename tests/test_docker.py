"""docker/ stays true to the code: the shards get the launcher's server settings, the
topology names the compose services, and every WALLET_* setting is one the code reads."""
from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from shard_router.topology import Topology
from launchers.postgres import SERVER_SETTINGS

DOCKER = Path(__file__).resolve().parent.parent / "docker"
REPOSITORY = DOCKER.parent
SETTINGS = REPOSITORY / "coordinator" / "runtime" / "settings.py"  # the one reader of WALLET_* settings
# Only the listen address differs: a container listens on its network, the launcher on loopback.
CONTAINER_OVERRIDES = {"listen_addresses": "*"}


def compose() -> dict:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def server_settings(service: dict) -> dict[str, str]:
    command = service["command"]
    assert command[0] == "postgres"
    pairs = [command[i + 1] for i, part in enumerate(command) if part == "-c"]
    return dict(pair.split("=", 1) for pair in pairs)


def test_postgres_servers_use_the_launchers_settings() -> None:
    """4 shards and the ledger, each with exactly launchers.postgres.SERVER_SETTINGS (2PC needs
    max_prepared_transactions), so docker and `make run` cannot drift apart."""
    services = compose()["services"]
    shards = sorted(name for name in services if re.fullmatch(r"shard\d+", name))
    assert shards == ["shard0", "shard1", "shard2", "shard3"]
    for name in [*shards, "ledger"]:
        assert server_settings(services[name]) == {**SERVER_SETTINGS, **CONTAINER_OVERRIDES}, name
        assert int(server_settings(services[name])["max_prepared_transactions"]) > 0


def test_topology_names_the_compose_services() -> None:
    """docker/topology.json is the even split over exactly the compose shards, plus the ledger."""
    topology = Topology.from_document(json.loads((DOCKER / "topology.json").read_text()))
    services = compose()["services"]
    for name, dsn in topology.shards.items():
        assert f"@{name}:5432/wallet" in dsn and name in services
    assert topology.ledger is not None and "@ledger:5432/ledger" in topology.ledger
    assert topology.slots == Topology.even(topology.shards).slots


def test_layout_zookeeper_replicas_relay_balancer() -> None:
    """3 ZooKeeper nodes in one ensemble, 2 coordinator replicas behind one port (that
    checks /readyz), one relay, migrations before any coordinator starts."""
    services = compose()["services"]
    ensemble = [services[f"zk{i}"] for i in (1, 2, 3)]
    assert {str(node["environment"]["ZOO_MY_ID"]) for node in ensemble} == {"1", "2", "3"}
    assert all(node["environment"]["ZOO_SERVERS"].count("server.") == 3 for node in ensemble)
    coordinator = services["coordinator"]
    assert coordinator["deploy"]["replicas"] == 2 and "ports" not in coordinator
    assert coordinator["command"][:2] == ["wallet", "serve"]
    assert coordinator["environment"]["WALLET_RELAY"] == "off"
    assert coordinator["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert services["relay"]["command"] == ["wallet", "ledger", "relay", "--follow"]
    assert services["migrate"]["command"][-1] == "wallet topology init --from /etc/wallet/topology.json && wallet db upgrade --all"
    assert services["balancer"]["ports"] == ["8000:8000"]
    haproxy = (DOCKER / "haproxy.cfg").read_text()
    assert "server-template coordinator 2 coordinator:8000" in haproxy and "GET /readyz" in haproxy


def test_every_wallet_setting_is_read_by_the_code() -> None:
    """A WALLET_* name in docker/ that nothing reads would be a silent misconfiguration; the
    settings object is the one place that reads them."""
    sources = SETTINGS.read_text()
    named = set(re.findall(r"\bWALLET_[A-Z_]+\b", (DOCKER / "compose.yaml").read_text()
                           + (DOCKER / "Dockerfile").read_text()))
    assert named, "docker/ passes no settings?"
    unread = {name for name in named if f'"{name}"' not in sources}
    assert not unread, f"docker/ sets {sorted(unread)}, which the code does not read"
    dockerfile = (DOCKER / "Dockerfile").read_text()
    for folder in ("coordinator", "shards", "shard_router", "ledger", "migrations"):
        assert f"COPY {folder} {folder}" in dockerfile


def test_the_image_holds_every_package_the_command_imports() -> None:
    """`wallet serve` in the image imports what `coordinator.cli.main` imports: each of this
    repository's packages among them is copied into the image."""
    import subprocess
    import sys

    imported = subprocess.run([sys.executable, "-c", "import sys, coordinator.cli.main; print(' '.join(sys.modules))"],
                              cwd=REPOSITORY, capture_output=True, text=True, check=True).stdout.split()
    ours = {name.split(".")[0] for name in imported if (REPOSITORY / name.split(".")[0] / "__init__.py").exists()}
    copied = set(re.findall(r"^COPY (\w+) \1$", (DOCKER / "Dockerfile").read_text(), flags=re.M))
    assert ours and ours <= copied, f"the image lacks {sorted(ours - copied)}"
