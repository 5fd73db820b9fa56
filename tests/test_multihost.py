"""docker/'s deployment run natively (`wallet chaos multihost`): the plan read from the compose
file keeps its hostnames, ports and environment and leaves no container path behind; the
reduced scale is the same files with fewer services; the network is a star of namespaces
that touches nothing outside itself. The last test runs the compose file for real, every
service in a namespace of its hostname, with a coordinator and a shard primary cut off."""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from launchers.compose import (
    DOCKER,
    SCALES,
    START_ORDER,
    Plan,
    Scale,
    bound_files,
    command_of,
    environment_of,
    haproxy_config,
    patroni_config,
    prometheus_config,
    read_plan,
    zookeeper_config,
)
from launchers.netns import MARKERS, NETNS_ETC, SUBNET, SWITCH, StarNetwork
from shard_router.topology import Topology

HOME = Path("/srv/run")  # never made: the plan is pure
SECRET = {"WALLET_AUTH_SECRET": "s" * 48}
WALLET = str(Path(sys.executable).parent / "wallet")
# What a container had as its own and must not leak into a native command or file (a whole
# path, or a folder of a longer one: "/prometheus" is the data volume's mount point).
CONTAINER_PATHS = (
    "/var/lib/postgresql",
    "/etc/patroni",
    "/tmp/pgpass",
    "/etc/wallet",
    "/tmp/wallet",
    "/usr/local/etc",
    "/etc/prometheus",
    "/prometheus",
    "/tokens",
)
RUN_TIMEOUT_S = 900


def compose_services() -> dict:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())["services"]


def every_text(plan: Plan) -> dict[str, str]:
    """Each service's native command, environment and files, as text."""
    texts = {}
    for service in plan.services:
        parts = [" ".join(command_of(service, HOME)), repr(environment_of(service, HOME, SECRET))]
        if service.kind == "member":
            parts.append(repr(patroni_config(service, HOME)))
        if service.kind == "zookeeper":
            parts.append(zookeeper_config(service, HOME))
        texts[service.name] = "\n".join(parts)
    texts.update({str(path): text for path, text in bound_files(plan, HOME).items() if path.name != "rules.yml"})
    return texts


def test_every_compose_service_runs_under_its_hostname_with_its_ports_and_environment() -> None:
    """The full plan is compose.yaml's services (the coordinator's two replicas named as compose
    names them), each with the environment compose gives it and the ports it listens on."""
    plan = read_plan("full")
    compose = compose_services()
    expected = {name for name in compose if name != "coordinator"} | {"coordinator-1", "coordinator-2"}
    assert set(plan.names) == expected - {"grafana"} and set(plan.left_out) == {"grafana"}
    for service in plan.services:
        given = compose[service.name.rsplit("-", 1)[0] if service.kind == "coordinator" else service.name]
        native = environment_of(service, HOME, SECRET)
        for key, value in given.get("environment", {}).items():
            if key == "WALLET_AUTH_SECRET":
                assert native[key] == SECRET[key]
            elif not str(value).startswith("/"):
                assert native[key] == str(value), (service.name, key)
    ports = {service.kind: service.ports for service in plan.services}
    assert ports["member"] == (5432, 8008) and ports["coordinator"] == (8000,) and ports["balancer"] == (8000,)
    assert ports["zookeeper"][:3] == (2181, 2888, 3888) and ports["prometheus"] == (9090,)
    assert Topology.from_document(yaml.safe_load((DOCKER / "topology.json").read_text())) == plan.topology


@pytest.mark.parametrize("scale", SCALES)
def test_no_container_path_is_left(scale: Scale) -> None:
    """Every path a container had to itself is a folder of the run's (or a file of docker/)."""
    for name, text in every_text(read_plan(scale)).items():
        leaked = [
            path for path in CONTAINER_PATHS if re.search(rf"(?<![\w./-]){re.escape(path)}(?=$|[/\s\"';&])", text)
        ]
        assert not leaked, f"{name} still names {leaked}"
    member = read_plan(scale).of_kind("member")[0]
    config = patroni_config(member, HOME)
    assert config["postgresql"]["data_dir"].startswith(str(HOME / "volumes" / member.name))
    assert config["postgresql"]["parameters"]["unix_socket_directories"] == str(HOME / member.name)
    assert config["bootstrap"]["post_init"] == str(DOCKER / "create-database.sh")


@pytest.mark.parametrize("scale", SCALES)
def test_services_start_after_what_they_depend_on(scale: Scale) -> None:
    plan = read_plan(scale)
    position = {name: index for index, name in enumerate(plan.names)}
    for service in plan.services:
        for dependency in service.depends_on:
            assert position[dependency] < position[service.name], (service.name, dependency)
    kinds = [service.kind for service in plan.services]
    assert kinds == sorted(kinds, key=START_ORDER.index)


def test_the_reduced_scale_is_the_same_files_with_fewer_services() -> None:
    """One ZooKeeper, the shard0, shard1 and ledger pairs, every other service; the ensemble
    lists and ZOO_SERVERS name only what runs; both streams on the ledger that runs."""
    plan = read_plan("reduced")
    assert plan.clusters == {"shard0": ["shard0a", "shard0b"], "shard1": ["shard1a", "shard1b"]} | {
        "ledger": ["ledgera", "ledgerb"]
    }
    assert [s.name for s in plan.of_kind("zookeeper")] == ["zk1"]
    assert {s.kind for s in plan.services} == set(START_ORDER)
    for service in plan.services:
        for key in ("PATRONI_ZOOKEEPER_HOSTS", "WALLET_ZK_HOSTS"):
            assert service.environment.get(key, "zk1:2181") == "zk1:2181"
    assert plan.service("zk1").environment["ZOO_SERVERS"] == "server.1=zk1:2888:3888;2181"
    full = read_plan("full").topology
    assert dict(plan.topology.shards) == {name: full.shards[name] for name in ("shard0", "shard1")}
    assert plan.topology.ledgers["ledger"].streams == ("shard0", "shard1") and set(plan.topology.ledgers) == {"ledger"}
    assert plan.topology.slots == Topology.even(plan.topology.shards).slots


def test_the_balancer_names_each_replica_without_dockers_dns() -> None:
    config = haproxy_config(read_plan("full"))
    assert "resolvers" not in config and "127.0.0.11" not in config
    servers = re.findall(r"^\s+server (\S+) (\S+) check inter 2s$", config, flags=re.M)
    assert servers == [("coordinator1", "coordinator-1:8000"), ("coordinator2", "coordinator-2:8000")]
    assert "option httpchk GET /readyz" in config


def test_prometheus_scrapes_each_replica_with_the_token_metrics_token_writes() -> None:
    """Docker's DNS discovery of `coordinator` becomes its replicas; the bearer credentials
    file is the one `metrics-token` writes into their shared volume; the rules sit beside."""
    plan = read_plan("full")
    config = prometheus_config(plan)
    (job,) = config["scrape_configs"]
    assert "dns_sd_configs" not in job
    assert job["static_configs"] == [{"targets": ["coordinator-1:8000", "coordinator-2:8000"]}]
    files = bound_files(plan, HOME)
    native = yaml.safe_load(files[HOME / "prometheus.yml"])
    token = HOME / "volumes" / "prometheus-token" / "prometheus"
    assert native["scrape_configs"][0]["authorization"]["credentials_file"] == str(token)
    assert f"> {token} " in " ".join(command_of(plan.service("metrics-token"), HOME))
    assert files[HOME / "rules.yml"] == (DOCKER / "prometheus" / "rules.yml").read_text()
    assert command_of(plan.service("prometheus"), HOME)[:2] == [
        "prometheus",
        f"--config.file={HOME / 'prometheus.yml'}",
    ]


def test_the_network_is_a_star_that_touches_nothing_outside() -> None:
    """Every link and address is made inside the run's namespaces (`ip -n`), on its subnet;
    no namespace gets a default route; a cut is the switch's end of the host's veth."""
    plan = read_plan("full")
    network = StarNetwork([*plan.names, "wallet-client"])
    assert len(set(network.addresses.values())) == len(network.addresses)
    assert all(ipaddress.ip_address(address) in SUBNET for address in network.addresses.values())
    for command in network.create_commands():
        assert command[:3] == ["ip", "netns", "add"] or command[1] == "-n", command
        assert "default" not in command and "route" not in command
    for name in plan.names:
        assert network.hosts_file().count(f"\t{name}\n") == 1
    assert network.link_command("shard0a", up=False) == ["ip", "-n", SWITCH, "link", "set", "dev", "shard0a", "down"]
    assert network.exec_command("zk1", ["java"])[:4] == ["ip", "netns", "exec", "zk1"]
    with pytest.raises(AssertionError):
        StarNetwork(["a-name-longer-than-fifteen"])


@pytest.mark.cluster
@pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces are made as root")
def test_the_compose_layout_runs_across_namespaces() -> None:
    """The whole compose file, natively: every service in a namespace of its hostname, the bank
    workload through the balancer; the coordinator leading recovery cut off (the other takes
    over), then shard0's primary (its standby is promoted, the old one rejoins); the checker
    clean after each phase; nothing left behind (namespaces, hosts files, processes)."""
    assert shutil.which("haproxy") or Path("/usr/sbin/haproxy").exists(), "make develop installs haproxy"
    completed = subprocess.run(
        [WALLET, "chaos", "multihost", "--scale", "full", "--seconds", "10"],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )
    print(completed.stdout)
    assert completed.returncode == 0, completed.stdout[-4000:] + completed.stderr[-4000:]
    rows = dict(re.findall(r"^\| (healthy load|coordinator cut|shard-primary cut) \|(.*)$", completed.stdout, re.M))
    assert len(rows) == 3 and all(row.rstrip().endswith("| clean |") for row in rows.values()), rows
    for row in rows.values():
        acknowledged = int(row.split("|")[4].strip().replace(",", ""))
        assert acknowledged > 0, row
    assert "the other led recovery after" in rows["coordinator cut"]
    assert "promoted after" in rows["shard-primary cut"] and "back as synchronous standby" in rows["shard-primary cut"]
    assert "Prometheus: 2 of 2 scrape targets up" in completed.stdout
    for name in read_plan("full").names:
        assert f"| {name} |" in completed.stdout
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    left = [
        name for name in [*read_plan("full").names, SWITCH, "wallet-client"] if re.search(rf"^{name}\b", listed, re.M)
    ]
    assert not left and not MARKERS.exists(), left
    assert not any((NETNS_ETC / name).exists() for name in read_plan("full").names)
    running = subprocess.run(["pgrep", "-f", "wallet-multihost-"], capture_output=True, text=True).stdout
    assert not running.strip(), f"processes of the run still running: {running}"
