"""docker/ read as a plan of native processes: compose.yaml's services (which kind each is,
its environment, command, ports and volumes), scaled down when asked, and each service's
container paths and files translated to a folder of the run's. Pure: nothing starts here;
launchers/multihost.py runs a plan, each service in a network namespace named after its
compose hostname (launchers/netns.py), with the compose file's ports and environment.

What the translation changes, and why (everything else is the files' own):
- Container paths become folders of the run: a named volume `<service>/<volume>`, a bound
  file (`./topology.json`, `./haproxy.cfg`) a copy of docker/'s in the run's folder, the
  images' COPY targets (/etc/patroni/...) docker/'s files themselves.
- What each container had to itself and one machine shares: a member's unix socket folder
  (/var/run/postgresql in the image) and pgpass (/tmp/pgpass) become the member's folder; the
  wallet image's WALLET_HOME (/tmp/wallet) the service's.
- The images' executables become this machine's: Patroni under the system Python
  (launchers/patroni.py), PostgreSQL's bin folder, Debian's ZooKeeper and HAProxy, the
  virtualenv's `wallet`. The ZooKeeper image writes zoo.cfg from its ZOO_* environment at
  start; `zookeeper_config` writes the same file from the same variables and its defaults.
- Docker's DNS (HAProxy's `resolvers docker` at 127.0.0.11, Prometheus's `dns_sd_configs`)
  does not exist natively. The replicas compose names `coordinator-1`, `coordinator-2`
  become one HAProxy `server` line and one Prometheus target each, resolved from the hosts
  file.
- Grafana is left out (NOT_NATIVE): nothing on this machine's registries installs it.
- The reduced scale (for a machine smaller than the 2-core one the full scale runs on): one
  ZooKeeper, the shard0, shard1 and ledger pairs, every other service; the ZooKeeper host
  lists and ZOO_SERVERS keep what remains, and the topology is docker/topology.json's even
  split over the shards kept, both streams on the ledger kept (`Topology.even`).
"""

from __future__ import annotations

import json
import re
import shlex
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

import yaml

from launchers.patroni import patroni_command
from launchers.postgres import postgres_bin
from launchers.zookeeper import ZOOKEEPER_CLASSPATH
from shard_router.topology import Topology

DOCKER = Path(__file__).resolve().parent.parent / "docker"
Kind = Literal["zookeeper", "member", "migrate", "coordinator", "relay", "token", "prometheus", "balancer"]
Scale = Literal["full", "reduced"]
SCALES: tuple[Scale, ...] = ("full", "reduced")
# A service's kind, by its image (the wallet image's by the service's name).
IMAGE_KINDS: dict[str, Kind] = {
    "zookeeper": "zookeeper",
    "wallet-patroni": "member",
    "haproxy": "balancer",
    "prom/prometheus": "prometheus",
}
WALLET_IMAGE = "wallet"
WALLET_KINDS: dict[str, Kind] = {
    "migrate": "migrate",
    "coordinator": "coordinator",
    "relay": "relay",
    "metrics-token": "token",
}
START_ORDER: tuple[Kind, ...] = (
    "zookeeper",
    "member",
    "migrate",
    "coordinator",
    "relay",
    "token",
    "prometheus",
    "balancer",
)
ONE_SHOT_KINDS: tuple[Kind, ...] = ("migrate", "token")  # compose waits for them to complete
# Images with nothing to run them from on this machine's registries: left out, and said so.
NOT_NATIVE = {"grafana/grafana": "Grafana: no package in Debian (nor PyPI or npm) to run it natively"}
# The user an image runs as (root otherwise): PostgreSQL refuses root; Prometheus's image is nobody's.
IMAGE_USERS: dict[Kind, str] = {"member": "postgres", "prometheus": "nobody"}
REDUCED_ZOOKEEPERS = ("zk1",)
REDUCED_CLUSTERS = ("shard0", "shard1", "ledger")
# Settings naming the ZooKeeper ensemble as host:port lists (reduced to the nodes kept).
ZOOKEEPER_HOST_LISTS = ("PATRONI_ZOOKEEPER_HOSTS", "WALLET_ZK_HOSTS")
# The zookeeper image's defaults for the ZOO_* variables its entrypoint writes into zoo.cfg.
ZOOKEEPER_IMAGE_DEFAULTS = {
    "ZOO_TICK_TIME": "2000",
    "ZOO_INIT_LIMIT": "5",
    "ZOO_SYNC_LIMIT": "2",
    "ZOO_AUTOPURGE_SNAPRETAINCOUNT": "3",
    "ZOO_AUTOPURGE_PURGEINTERVAL": "0",
    "ZOO_MAX_CLIENT_CNXNS": "60",
    "ZOO_STANDALONE_ENABLED": "true",
    "ZOO_ADMINSERVER_ENABLED": "true",
}
ZOOKEEPER_ADMIN_PORT = 8080  # the image's admin server (AdminServer's default port)
ZOOKEEPER_HEAP = "256m"  # the image leaves the JVM's default (a quarter of the machine's memory)
MEMBER_SOCKET_FOLDER = "/var/run/postgresql"  # the postgres image's unix_socket_directories
MEMBER_PGPASS = "/tmp/pgpass"
MEMBER_CONFIG = "/etc/patroni/patroni.yml"
# The images' entry points where compose gives no command (the wallet image's is `wallet`,
# on PATH). The member's is Dockerfile.patroni's CMD with Patroni run as launchers/patroni.py runs it.
IMAGE_COMMANDS: dict[Kind, tuple[str, ...]] = {
    "member": ("patroni", MEMBER_CONFIG),
    "balancer": ("haproxy", "-W", "-db", "-f", "/usr/local/etc/haproxy/haproxy.cfg"),
}
IMAGE_ENTRYPOINTS: dict[Kind, tuple[str, ...]] = {"prometheus": ("prometheus",)}  # compose's command: its arguments
IMAGE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"  # the images' PATH


@dataclass(frozen=True)
class Service:
    """One compose service (a replica of one: `coordinator-1`), as the files say."""

    name: str  # the compose hostname: the network namespace it runs in
    kind: Kind
    environment: Mapping[str, str]  # compose's, interpolation left to `environment_of`
    command: tuple[str, ...]  # compose's command (the wallet image's), else empty
    ports: tuple[int, ...]  # what it listens on, in its own namespace
    volumes: tuple[str, ...]  # compose's `source:target[:mode]`
    depends_on: tuple[str, ...]

    @property
    def cluster(self) -> str:
        """A member's Patroni cluster: `shard0`, `ledger`, ..."""
        assert self.kind == "member", f"{self.name} is a {self.kind}, not a Patroni member"
        return self.environment["PATRONI_SCOPE"].removeprefix("wallet-")


@dataclass(frozen=True)
class Plan:
    scale: Scale
    services: tuple[Service, ...]  # in start order
    topology: Topology
    left_out: Mapping[str, str]  # compose services not run natively -> why

    @property
    def names(self) -> list[str]:
        return [service.name for service in self.services]

    def of_kind(self, kind: Kind) -> list[Service]:
        return [service for service in self.services if service.kind == kind]

    def service(self, name: str) -> Service:
        for service in self.services:
            if service.name == name:
                return service
        raise KeyError(f"no service {name!r} in the {self.scale} plan")

    @property
    def clusters(self) -> dict[str, list[str]]:
        """Patroni cluster -> its members' names."""
        found: dict[str, list[str]] = {}
        for member in self.of_kind("member"):
            found.setdefault(member.cluster, []).append(member.name)
        return found

    @property
    def zookeeper_hosts(self) -> str:
        return ",".join(f"{service.name}:{service.ports[0]}" for service in self.of_kind("zookeeper"))


# -- reading ---------------------------------------------------------------------------------
def read_plan(scale: Scale, docker: Path = DOCKER) -> Plan:
    assert scale in SCALES, f"scale must be one of {SCALES}, not {scale!r}"
    compose = yaml.safe_load((docker / "compose.yaml").read_text())
    left_out = {
        name: NOT_NATIVE[str(body["image"]).split(":")[0]]
        for name, body in compose["services"].items()
        if str(body.get("image", "")).split(":")[0] in NOT_NATIVE
    }
    services = [
        service
        for name, body in compose["services"].items()
        if name not in left_out
        for service in services_of(name, body, docker)
    ]
    topology = Topology.from_document(json.loads((docker / "topology.json").read_text()))
    if scale == "reduced":
        services, topology = reduce(services), reduce_topology(topology)
    services = expand_replicas(services)
    services.sort(key=lambda service: START_ORDER.index(service.kind))
    return Plan(scale, tuple(services), topology, left_out)


def services_of(name: str, body: Mapping[str, Any], docker: Path) -> list[Service]:
    """A compose service; one per replica (`coordinator-1`, ... as compose names them)."""
    image = str(body["image"]).split(":")[0]
    kind = WALLET_KINDS.get(name) if image == WALLET_IMAGE else IMAGE_KINDS.get(image)
    assert kind is not None, f"compose service {name!r} (image {image}) is of no kind this plan knows: teach it"
    environment = {key: str(value) for key, value in body.get("environment", {}).items()}
    command = tuple(str(word) for word in body.get("command", ()))
    ports = ports_of(kind, name, environment, command, body, docker)
    volumes = tuple(str(volume) for volume in body.get("volumes", ()))
    depends_on = tuple(body.get("depends_on", {}))
    replicas = int(body.get("deploy", {}).get("replicas", 1))
    names = [name] if replicas == 1 else [f"{name}-{index}" for index in range(1, replicas + 1)]
    return [Service(each, kind, environment, command, ports, volumes, depends_on) for each in names]


def expand_replicas(services: list[Service]) -> list[Service]:
    """A dependency on a replicated service is one on each of its replicas."""
    replicas: dict[str, list[str]] = {}
    for service in services:
        base = service.name.rsplit("-", 1)[0] if service.name.rsplit("-", 1)[-1].isdigit() else service.name
        replicas.setdefault(base, []).append(service.name)
    return [
        Service(
            service.name,
            service.kind,
            service.environment,
            service.command,
            service.ports,
            service.volumes,
            tuple(name for dependency in service.depends_on for name in replicas.get(dependency, [dependency])),
        )
        for service in services
    ]


def ports_of(
    kind: Kind,
    name: str,
    environment: Mapping[str, str],
    command: tuple[str, ...],
    body: Mapping[str, Any],
    docker: Path,
) -> tuple[int, ...]:
    if kind == "member":
        exposed = re.findall(r"^EXPOSE (.+)$", (docker / "Dockerfile.patroni").read_text(), flags=re.M)
        return tuple(int(port) for line in exposed for port in line.split())
    if kind == "zookeeper":
        own = next(s for s in environment["ZOO_SERVERS"].split() if s.split("=")[1].startswith(f"{name}:"))
        quorum, client = own.split("=")[1].split(";")
        admin = (
            [ZOOKEEPER_ADMIN_PORT]
            if {**ZOOKEEPER_IMAGE_DEFAULTS, **environment}["ZOO_ADMINSERVER_ENABLED"] == "true"
            else []
        )
        return (int(client), *(int(port) for port in quorum.split(":")[1:]), *admin)
    if kind == "coordinator":
        return (int(command[command.index("--port") + 1]),)
    if kind in ("balancer", "prometheus"):
        return tuple(int(str(mapping).split(":")[-1]) for mapping in body["ports"])
    return ()


def reduce(services: list[Service]) -> list[Service]:
    kept = [
        service
        for service in services
        if (service.kind == "zookeeper" and service.name in REDUCED_ZOOKEEPERS)
        or (service.kind == "member" and service.cluster in REDUCED_CLUSTERS)
        or service.kind not in ("zookeeper", "member")
    ]
    names = {service.name for service in kept}
    return [
        Service(
            service.name,
            service.kind,
            reduce_environment(service.environment, names),
            service.command,
            service.ports,
            service.volumes,
            tuple(name for name in service.depends_on if name in names),
        )
        for service in kept
    ]


def reduce_environment(environment: Mapping[str, str], names: set[str]) -> dict[str, str]:
    reduced = dict(environment)
    for key in ZOOKEEPER_HOST_LISTS:
        if key in reduced:
            reduced[key] = ",".join(host for host in reduced[key].split(",") if host.split(":")[0] in names)
    if "ZOO_SERVERS" in reduced:
        reduced["ZOO_SERVERS"] = " ".join(
            server for server in reduced["ZOO_SERVERS"].split() if server.split("=")[1].split(":")[0] in names
        )
    return reduced


def reduce_topology(topology: Topology) -> Topology:
    shards = {name: dsn for name, dsn in topology.shards.items() if name in REDUCED_CLUSTERS}
    ledgers = {name: server.dsn for name, server in topology.ledgers.items() if name in REDUCED_CLUSTERS}
    return Topology.even(shards, ledgers=ledgers)


# -- translating -----------------------------------------------------------------------------
def folder_of(service: Service, home: Path) -> Path:
    return home / service.name


def image_environment(dockerfile: Path) -> dict[str, str]:
    """The ENV lines of a Dockerfile."""
    found: dict[str, str] = {}
    for line in re.findall(r"^ENV (.+)$", dockerfile.read_text(), flags=re.M):
        for pair in shlex.split(line):
            key, _, value = pair.partition("=")
            found[key] = value
    return found


def image_copies(dockerfile: Path) -> dict[str, Path]:
    """Container path -> the repository file a Dockerfile COPYs there (files only)."""
    repository = dockerfile.parent.parent
    return {
        target: repository / source
        for source, target in re.findall(r"^COPY (\S+) (/\S+)$", dockerfile.read_text(), flags=re.M)
        if (repository / source).is_file()
    }


def container_paths(service: Service, home: Path, docker: Path = DOCKER) -> dict[str, str]:
    """Container path -> native path."""
    folder = folder_of(service, home)
    paths: dict[str, str] = {}
    for volume in service.volumes:
        source, target = volume.split(":")[:2]
        paths[target] = str(home / Path(source).name if source.startswith("./") else home / "volumes" / source)
    if service.kind == "member":
        paths.update({target: str(source) for target, source in image_copies(docker / "Dockerfile.patroni").items()})
        paths[MEMBER_CONFIG] = str(folder / "patroni.yml")  # docker/patroni.yml translated (`patroni_config`)
        paths[MEMBER_PGPASS] = str(folder / "pgpass")
    if service.kind in WALLET_KINDS.values():
        image = image_environment(docker / "Dockerfile")
        paths[image["WALLET_HOME"]] = str(folder / "wallet")
        paths.setdefault(image["WALLET_TOPOLOGY"], str(home / "topology.json"))  # where the others mount it
    return paths


def translate(text: str, paths: Mapping[str, str]) -> str:
    """Each container path (a whole path, or a folder of a longer one) replaced, in one pass:
    what was replaced is never read again."""
    if not paths:
        return text
    longest_first = sorted(paths, key=len, reverse=True)
    pattern = "|".join(re.escape(path) for path in longest_first)
    return re.sub(rf"(?<![\w./-])({pattern})(?=$|[/\s\"';&])", lambda match: paths[match.group(1)], text)


def interpolate(text: str, variables: Mapping[str, str]) -> str:
    """Compose's `${NAME}`, `${NAME:-default}` and `${NAME:?message}`."""

    def value(match: re.Match[str]) -> str:
        name, operator, argument = match.group(1), match.group(2), match.group(3) or ""
        if variables.get(name):
            return variables[name]
        assert operator != "?", f"{name}: {argument}"
        return argument if operator == "-" else ""

    return re.sub(r"\$\{(\w+)(?::([?-])([^}]*))?\}", value, text)


def environment_of(service: Service, home: Path, variables: Mapping[str, str], docker: Path = DOCKER) -> dict[str, str]:
    """What the service's process gets: its image's environment, then compose's, each
    interpolated with `variables` and its container paths translated."""
    paths = container_paths(service, home, docker)
    image = image_environment(docker / "Dockerfile") if service.kind in WALLET_KINDS.values() else {}
    merged = {**image, **{key: interpolate(value, variables) for key, value in service.environment.items()}}
    native = {"LANG": "C.UTF-8", "PATH": IMAGE_PATH, **{key: translate(value, paths) for key, value in merged.items()}}
    if service.kind in WALLET_KINDS.values():
        native["PATH"] = f"{Path(sys.executable).parent}:{IMAGE_PATH}"  # the image's `wallet`: the virtualenv's
    if service.kind == "member":
        native["PATH"] = f"{postgres_bin()}:{IMAGE_PATH}"  # the postgres image has its binaries on PATH
        native["PYTHONPATH"] = patroni_command()[1]["PYTHONPATH"]  # Patroni's packages (launchers/patroni.py)
    return native


def patroni_config(service: Service, home: Path, docker: Path = DOCKER) -> dict[str, Any]:
    """docker/patroni.yml with this member's container paths native, its unix socket in its folder."""
    paths = container_paths(service, home, docker)
    config = cast(
        dict[str, Any], json.loads(translate(json.dumps(yaml.safe_load((docker / "patroni.yml").read_text())), paths))
    )
    postgresql = config["postgresql"]
    postgresql["bin_dir"] = str(postgres_bin())
    postgresql.setdefault("parameters", {})["unix_socket_directories"] = str(folder_of(service, home))
    return config


def zookeeper_config(service: Service, home: Path) -> str:
    """The zoo.cfg the zookeeper image's entrypoint writes from the service's ZOO_* environment."""
    folder = folder_of(service, home)
    value = {**ZOOKEEPER_IMAGE_DEFAULTS, **service.environment}
    lines = [
        f"dataDir={folder / 'data'}",
        f"dataLogDir={folder / 'datalog'}",
        f"tickTime={value['ZOO_TICK_TIME']}",
        f"initLimit={value['ZOO_INIT_LIMIT']}",
        f"syncLimit={value['ZOO_SYNC_LIMIT']}",
        f"autopurge.snapRetainCount={value['ZOO_AUTOPURGE_SNAPRETAINCOUNT']}",
        f"autopurge.purgeInterval={value['ZOO_AUTOPURGE_PURGEINTERVAL']}",
        f"maxClientCnxns={value['ZOO_MAX_CLIENT_CNXNS']}",
        f"standaloneEnabled={value['ZOO_STANDALONE_ENABLED']}",
        f"admin.enableServer={value['ZOO_ADMINSERVER_ENABLED']}",
        *value["ZOO_SERVERS"].split(),
    ]
    if "ZOO_4LW_COMMANDS_WHITELIST" in value:
        lines.append(f"4lw.commands.whitelist={value['ZOO_4LW_COMMANDS_WHITELIST']}")
    return "\n".join(lines) + "\n"


def haproxy_config(plan: Plan, docker: Path = DOCKER) -> str:
    """docker/haproxy.cfg without Docker's DNS: each replica a server line of its own."""
    out: list[str] = []
    in_resolvers = False
    for line in (docker / "haproxy.cfg").read_text().splitlines():
        if line and not line[0].isspace():
            in_resolvers = line.startswith("resolvers ")
        if in_resolvers:
            continue
        template = re.match(r"(\s+)server-template (\S+) (\d+) (\S+):(\d+)(.*)$", line)
        if template is None:
            out.append(line)
            continue
        indent, prefix, count, host, port, options = template.groups()
        options = re.sub(r"\s+(resolvers|init-addr)\s+\S+", "", options)
        replicas = [service.name for service in plan.services if service.name.startswith(f"{host}-")]
        assert len(replicas) == int(count), f"haproxy.cfg expects {count} of {host}, the plan has {replicas}"
        out += [f"{indent}server {prefix}{name.rsplit('-', 1)[1]} {name}:{port}{options}" for name in replicas]
    return "\n".join(out) + "\n"


def prometheus_config(plan: Plan, docker: Path = DOCKER) -> dict[str, Any]:
    """docker/prometheus/prometheus.yml without Docker's DNS: a DNS discovery of a replicated
    service becomes the list of its replicas (resolved from the hosts file at each scrape);
    its container paths are the run's."""
    config = cast(dict[str, Any], yaml.safe_load((docker / "prometheus" / "prometheus.yml").read_text()))
    for job in config.get("scrape_configs", []):
        targets = [
            f"{replica}:{lookup['port']}"
            for lookup in job.pop("dns_sd_configs", [])
            for name in lookup["names"]
            for replica in plan.names
            if replica.startswith(f"{name}-")
        ]
        if targets:
            job["static_configs"] = [{"targets": targets}]
    return config


def bound_files(plan: Plan, home: Path, docker: Path = DOCKER) -> dict[Path, str]:
    """The run's copy of each docker/ file a service mounts (`./x:/in/the/container`): the
    topology as planned, the HAProxy and Prometheus configurations without Docker's DNS and
    with native paths, the rest as they are."""
    files: dict[Path, str] = {}
    for service in plan.services:
        for volume in service.volumes:
            source = volume.split(":")[0]
            if not source.startswith("./"):
                continue
            native = home / Path(source).name
            if native.name == "topology.json":
                files[native] = json.dumps(plan.topology.to_document(), indent=2) + "\n"
            elif native.name == "haproxy.cfg":
                files[native] = haproxy_config(plan, docker)
            elif native.name == "prometheus.yml":
                paths = container_paths(service, home, docker)
                files[native] = translate(yaml.safe_dump(prometheus_config(plan, docker), sort_keys=False), paths)
            else:
                files[native] = (docker / source).read_text()
    return files


def command_of(service: Service, home: Path, docker: Path = DOCKER) -> list[str]:
    """The native command: the compose command or the image's, its paths translated."""
    if service.kind == "zookeeper":  # the image's entrypoint writes zoo.cfg, then runs the server
        java = ["java", f"-Xmx{ZOOKEEPER_HEAP}", "-cp", ZOOKEEPER_CLASSPATH]
        return [*java, "org.apache.zookeeper.server.quorum.QuorumPeerMain", str(folder_of(service, home) / "zoo.cfg")]
    paths = container_paths(service, home, docker)
    given = IMAGE_ENTRYPOINTS.get(service.kind, ()) + (service.command or IMAGE_COMMANDS[service.kind])
    command = [translate(word, paths) for word in given]
    if service.kind == "member":
        patroni, _ = patroni_command()
        command = [*patroni, *command[1:]]
    return command
