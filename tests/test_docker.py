"""docker/ stays true to the code: the shards and the ledger are Patroni pairs with the
launcher's configuration, the topology names the compose services, and every WALLET_* setting is one the code reads."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from launchers.patroni import BASEBACKUP, MEMBER_SETTINGS, NAMESPACE, bootstrap_dcs
from launchers.postgres import SERVER_SETTINGS
from shard_router.topology import Topology

DOCKER = Path(__file__).resolve().parent.parent / "docker"
REPOSITORY = DOCKER.parent
SETTINGS = REPOSITORY / "core" / "runtime" / "settings.py"  # the one reader of WALLET_* settings


def compose() -> dict:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


CLUSTERS = ("shard0", "shard1", "shard2", "shard3", "ledger")


def patroni_config() -> dict:
    return yaml.safe_load((DOCKER / "patroni.yml").read_text())


def test_every_shard_and_the_ledger_is_a_patroni_pair() -> None:
    """4 shards and the ledger, each two members (`<name>a`, `<name>b`) of one Patroni scope on
    the ensemble, running docker/patroni.yml: its cluster configuration is the launcher's
    (synchronous mode, max_prepared_transactions for 2PC, pg_rewind) and its server settings
    launchers.postgres.SERVER_SETTINGS, so docker and `wallet dev up --replicas 1` cannot drift."""
    services = compose()["services"]
    members = sorted(name for name in services if re.fullmatch(r"(shard\d+|ledger)[ab]", name))
    assert members == sorted(f"{name}{x}" for name in CLUSTERS for x in "ab")
    for name in members:
        service, cluster = services[name], name[:-1]
        environment = service["environment"]
        assert service["build"]["dockerfile"] == "docker/Dockerfile.patroni"
        assert environment["PATRONI_SCOPE"] == f"wallet-{cluster}" and environment["PATRONI_NAME"] == name
        assert environment["PATRONI_POSTGRESQL_CONNECT_ADDRESS"] == f"{name}:5432"
        assert environment["PATRONI_ZOOKEEPER_HOSTS"] == "zk1:2181,zk2:2181,zk3:2181"
        assert environment["DATABASE_NAME"] == ("ledger" if cluster == "ledger" else "wallet")
    config = patroni_config()
    assert config["namespace"] == NAMESPACE
    assert config["bootstrap"]["dcs"] == bootstrap_dcs()
    assert config["bootstrap"]["dcs"]["synchronous_mode"] is True
    assert int(config["bootstrap"]["dcs"]["postgresql"]["parameters"]["max_prepared_transactions"]) > 0
    assert config["postgresql"]["parameters"] == MEMBER_SETTINGS
    assert config["postgresql"]["basebackup"] == BASEBACKUP
    shared = config["bootstrap"]["dcs"]["postgresql"]["parameters"]
    assert {
        **shared,
        **MEMBER_SETTINGS,
        "listen_addresses": SERVER_SETTINGS["listen_addresses"],
    }.items() >= SERVER_SETTINGS.items()
    dockerfile = (DOCKER / "Dockerfile.patroni").read_text()
    assert "COPY docker/patroni.yml /etc/patroni/patroni.yml" in dockerfile
    assert config["bootstrap"]["post_init"] == "/etc/patroni/create-database.sh"
    assert "COPY docker/create-database.sh /etc/patroni/create-database.sh" in dockerfile


def test_topology_names_the_compose_services() -> None:
    """docker/topology.json is the even split over exactly the compose shards, plus the ledger;
    each DSN names both members of its pair, read-write (the current primary, no proxy)."""
    topology = Topology.from_document(json.loads((DOCKER / "topology.json").read_text()))
    services = compose()["services"]
    for name, dsn in topology.shards.items():
        assert f"@{name}a:5432,{name}b:5432/wallet?target_session_attrs=read-write" in dsn
        assert {f"{name}a", f"{name}b"} <= set(services)
    assert set(topology.ledgers) == {"ledger", "ledger1"}
    for name, server in topology.ledgers.items():
        assert f"@{name}a:5432,{name}b:5432/ledger?target_session_attrs=read-write" in server.dsn
        assert {f"{name}a", f"{name}b"} <= set(services)
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
    assert (
        services["migrate"]["command"][-1]
        == "wallet topology init --from /etc/wallet/topology.json && wallet db upgrade --all"
    )
    assert services["balancer"]["ports"] == ["8000:8000"]
    haproxy = (DOCKER / "haproxy.cfg").read_text()
    assert "server-template coordinator 2 coordinator:8000" in haproxy and "GET /readyz" in haproxy


def test_prometheus_scrapes_every_replica_with_a_token_and_grafana_shows_the_dashboard() -> None:
    """The monitoring is wired: `metrics-token` writes an admin token into the volume that
    Prometheus reads its bearer credentials from; Prometheus runs docker/prometheus/'s config
    and rules and scrapes every coordinator replica on the port it serves; Grafana provisions
    the Prometheus service as its datasource and the dashboards from the folder mounted where
    its provider looks; both answer on loopback only."""
    services = compose()["services"]
    token, prometheus, grafana = services["metrics-token"], services["prometheus"], services["grafana"]
    (volume,) = token["volumes"]
    token_volume, token_dir = volume.split(":")
    token_file = re.search(rf"wallet token issue --owner \w+ --admin .*> {token_dir}/(\w+)", token["command"][-1])
    assert token_file is not None, "metrics-token writes an admin token into its volume"
    mounts = dict(reversed(mount.rsplit(":", 2)[:2]) for mount in prometheus["volumes"])  # target -> source
    assert prometheus["depends_on"]["metrics-token"]["condition"] == "service_completed_successfully"
    config = yaml.safe_load((DOCKER / "prometheus" / "prometheus.yml").read_text())
    assert mounts["/etc/prometheus/prometheus.yml"] == "./prometheus/prometheus.yml"
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
    for rules in config["rule_files"]:
        assert mounts[f"/etc/prometheus/{rules}"] == f"./prometheus/{rules}"
        assert (DOCKER / "prometheus" / rules).is_file()
    (job,) = config["scrape_configs"]
    credentials = Path(job["authorization"]["credentials_file"])
    assert job["authorization"]["type"] == "Bearer" and job["metrics_path"] == "/metrics"
    assert mounts[str(credentials.parent)] == token_volume and credentials.name == token_file.group(1)
    (discovery,) = job["dns_sd_configs"]
    coordinator = services["coordinator"]
    assert discovery["names"] == ["coordinator"] and coordinator["deploy"]["replicas"] == 2
    assert ["--port", str(discovery["port"])] == coordinator["command"][-2:]

    datasource = yaml.safe_load((DOCKER / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text())
    (source,) = datasource["datasources"]
    assert source["url"] == "http://prometheus:9090" and source["type"] == "prometheus"
    provider = yaml.safe_load((DOCKER / "grafana" / "provisioning" / "dashboards" / "wallet.yml").read_text())
    grafana_mounts = dict(reversed(mount.rsplit(":", 2)[:2]) for mount in grafana["volumes"])
    assert grafana_mounts["/etc/grafana/provisioning"] == "./grafana/provisioning"
    (dashboards,) = provider["providers"]
    assert grafana_mounts[dashboards["options"]["path"]] == "./grafana/dashboards"
    assert list((DOCKER / "grafana" / "dashboards").glob("*.json"))
    assert "GRAFANA_ADMIN_PASSWORD:?" in grafana["environment"]["GF_SECURITY_ADMIN_PASSWORD"]
    assert prometheus["ports"] == ["127.0.0.1:9090:9090"] and grafana["ports"] == ["127.0.0.1:3000:3000"]


def test_every_wallet_setting_is_read_by_the_code() -> None:
    """A WALLET_* name in docker/ that nothing reads would be a silent misconfiguration; the
    settings object is the one place that reads them."""
    sources = SETTINGS.read_text()
    named = set(
        re.findall(r"\bWALLET_[A-Z_]+\b", (DOCKER / "compose.yaml").read_text() + (DOCKER / "Dockerfile").read_text())
    )
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

    imported = subprocess.run(
        [sys.executable, "-c", "import sys, coordinator.cli.main; print(' '.join(sys.modules))"],
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    ours = {name.split(".")[0] for name in imported if (REPOSITORY / name.split(".")[0] / "__init__.py").exists()}
    copied = set(re.findall(r"^COPY (\w+) \1$", (DOCKER / "Dockerfile").read_text(), flags=re.M))
    assert ours and ours <= copied, f"the image lacks {sorted(ours - copied)}"
