"""The alert rules and the dashboard (docker/prometheus/, docker/grafana/), three ways: promtool
checks the rules, promtool runs their unit tests (rules.test.yml), and a real Prometheus
scraping a running `wallet serve` fires an alert once its condition is made true. Every
metric name a rule or a panel asks for is one the service exports (or a recording rule)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import yaml

from coordinator.api.metrics import Metrics
from coordinator.cluster.leadership import LocalLeader
from coordinator.service.wallet import WalletService
from launchers.postgres import LocalCluster, free_port
from shard_router.topology import Topology
from tests.helpers import REPOSITORY, SHARDS, TEST_SECRET, accounts_on, cross_shard_transfers, kill_at, open_accounts

PROMETHEUS = REPOSITORY / "docker" / "prometheus"
GRAFANA = REPOSITORY / "docker" / "grafana"
ALERTS_PAGE = REPOSITORY / "docs" / "alerts.md"
WALLET = str(Path(sys.executable).parent / "wallet")
PROMTOOL_TIMEOUT_S = 60
START_TIMEOUT_S = 60  # `wallet serve` ready, Prometheus ready, its first scrape
FIRING_TIMEOUT_S = 60  # an alert of `for: 2s` on 1 s scrapes and evaluations
# What a query may name besides the service's metrics: Prometheus's own series.
PROMETHEUS_SERIES = frozenset({"up", "ALERTS", "ALERTS_FOR_STATE"})
PROMQL_WORDS = frozenset(
    {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset"}
)


def promtool(*arguments: str) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("promtool")
    assert tool, "promtool is missing: `make develop` installs it (tests/install-system-deps.sh: prometheus)"
    return subprocess.run([tool, *arguments], capture_output=True, text=True, timeout=PROMTOOL_TIMEOUT_S)


def rules() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((PROMETHEUS / "rules.yml").read_text())
    return loaded


def alerting_rules() -> list[dict[str, Any]]:
    return [rule for group in rules()["groups"] for rule in group["rules"] if "alert" in rule]


def recorded_names() -> set[str]:
    return {rule["record"] for group in rules()["groups"] for rule in group["rules"] if "record" in rule}


def exported_names() -> set[str]:
    """Every sample name the service's registry can expose, by each family's type."""
    suffixes = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_count", "_sum", "_created")}
    names: set[str] = set()
    for family in Metrics().registry.collect():
        names.update(family.name + suffix for suffix in suffixes.get(family.type, ("",)))
    return names


def metric_names(expression: str) -> set[str]:
    """The series names a PromQL expression selects (functions, keywords, labels left out)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expression)  # strings
    text = re.sub(r"\{[^}]*\}|\[[^\]]*\]", "", text)  # label matchers, ranges
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    names = set()
    for found in re.finditer(r"(?<![\w.$])[A-Za-z_:][A-Za-z0-9_:]*", text):
        if text[found.end() :].lstrip().startswith("(") or found.group() in PROMQL_WORDS:
            continue  # a function's name, or an operator
        names.add(found.group())
    return names


def dashboard_queries() -> list[str]:
    queries: list[str] = []
    for path in sorted((GRAFANA / "dashboards").glob("*.json")):
        for panel in json.loads(path.read_text())["panels"]:
            queries.extend(target["expr"] for target in panel.get("targets", []))
    return queries


def test_promql_names_are_found_in_expressions() -> None:
    """Protects the name check below from passing vacuously: it finds series, not functions,
    labels, strings or keywords."""
    assert metric_names(
        'histogram_quantile(0.99, sum by (mode, le) (rate(wallet_transfer_seconds_bucket{kind="x"}[$__rate_interval])))'
    ) == {"wallet_transfer_seconds_bucket"}
    assert metric_names(
        'max by (shard) (a_seconds) > 60 unless on (shard) (time() - max by (shard) (label_replace(b, "s", "$1", "t", '
        '"(.+)")) < 6e1) and bool c:d'
    ) == {"a_seconds", "b", "c:d"}


def test_the_rules_pass_promtool_check() -> None:
    """`promtool check rules`: the rules file parses, every expression is valid PromQL."""
    checked = promtool("check", "rules", str(PROMETHEUS / "rules.yml"))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {sum(len(group['rules']) for group in rules()['groups'])} rules found" in checked.stdout


def test_the_rules_pass_their_unit_tests() -> None:
    """`promtool test rules`: every alert fires on the input series where it must and stays
    quiet where it must not; the recording rules compute what they say."""
    tested = promtool("test", "rules", str(PROMETHEUS / "rules.test.yml"))
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def test_every_alert_has_a_unit_test_and_a_runbook() -> None:
    """An alert nobody tested, or that pages someone with no page saying what to do, does not ship."""
    cases = yaml.safe_load((PROMETHEUS / "rules.test.yml").read_text())["tests"]
    firing = {
        test["alertname"]
        for case in cases
        for test in case.get("alert_rule_test", [])
        if test.get("exp_alerts")  # each is also checked quiet in its case
    }
    headings = set(re.findall(r"^### (Wallet\w+)$", ALERTS_PAGE.read_text(), flags=re.M))
    for rule in alerting_rules():
        name = rule["alert"]
        assert name in firing, f"{name}: no case in rules.test.yml where it fires"
        assert name in headings, f"{name}: no '### {name}' section in docs/alerts.md"
        assert rule["annotations"]["runbook"] == f"docs/alerts.md#{name.lower()}"
        assert rule["labels"]["severity"] in {"page", "ticket"}


def test_every_series_a_rule_or_panel_asks_for_is_exported() -> None:
    """A rule or panel over a misspelt or renamed metric is silently empty forever: each name
    is one the service's registry exposes, a recording rule of rules.yml, or Prometheus's own."""
    known = exported_names() | recorded_names() | PROMETHEUS_SERIES
    queries = [rule["expr"] for group in rules()["groups"] for rule in group["rules"]] + dashboard_queries()
    assert len(dashboard_queries()) >= 15
    for query in queries:
        assert metric_names(query), f"no series in {query!r}?"
        unknown = metric_names(query) - known
        assert not unknown, f"{query!r} asks for {sorted(unknown)}, which nothing exports"


def test_the_dashboard_has_the_panels_an_operator_needs() -> None:
    """Throughput by mode and outcome, p50 and p99, batch sizes, in-doubt branches and holds,
    outbox lag, shard health; every panel on the provisioned datasource."""
    (path,) = (GRAFANA / "dashboards").glob("*.json")
    dashboard = json.loads(path.read_text())
    datasource = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())
    (source,) = datasource["datasources"]
    panels = {panel["title"]: panel for panel in dashboard["panels"] if panel["type"] != "row"}
    queries = {title: " ".join(target["expr"] for target in panel["targets"]) for title, panel in panels.items()}
    assert "wallet_transfers_total" in queries["Throughput by mode and outcome"]
    assert "by (mode, outcome)" in queries["Throughput by mode and outcome"]
    assert {"0.50", "0.99"} <= set(re.findall(r"histogram_quantile\((0\.\d+)", queries["Latency p50 and p99 by mode"]))
    assert "wallet_batch_size" in queries["Batch sizes"]
    assert {"wallet_in_doubt_branches", "wallet_open_holds"} <= metric_names(queries["In-doubt branches and holds"])
    assert "wallet_outbox_lag_seconds" in queries["Outbox lag"]
    assert "wallet_shard_up" in queries["Shards and ledger servers up"]
    assert "wallet_shard_synchronous_standbys" in queries["Synchronous standbys"]
    for panel in panels.values():
        assert panel["datasource"]["uid"] == source["uid"], panel["title"]


def test_the_shipped_prometheus_config_is_valid(tmp_path: Path) -> None:
    """`promtool check config` on docker/prometheus/prometheus.yml, its token file made (in
    compose the `metrics-token` service writes it)."""
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    token = tmp_path / "token"
    token.write_text("x")
    config["scrape_configs"][0]["authorization"]["credentials_file"] = str(token)
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    shutil.copy(PROMETHEUS / "rules.yml", tmp_path / "rules.yml")
    checked = promtool("check", "config", str(tmp_path / "prometheus.yml"))
    assert checked.returncode == 0, checked.stdout + checked.stderr


# -- a real Prometheus ---------------------------------------------------------------------


def quick_rules(alerts: dict[str, str | None]) -> dict[str, Any]:
    """rules.yml with each named alert's `for` at 2 s and, where given, the number its
    expression ends with (`> 60`) replaced: the shipped expressions, at a test's scale."""
    shipped = rules()
    for group in shipped["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") in alerts:
                rule["for"] = "2s"
                threshold = alerts[rule["alert"]]
                if threshold is not None:
                    assert re.search(r"> \d+$", rule["expr"]), f"{rule['alert']}: ends with no threshold"
                    rule["expr"] = re.sub(r"> \d+$", f"> {threshold}", rule["expr"])
    return shipped


def prometheus_config(target: str, token_file: Path) -> dict[str, Any]:
    """docker/prometheus/prometheus.yml (its bearer-token scrape), scraping `target` every second."""
    config: dict[str, Any] = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    (job,) = config["scrape_configs"]
    job.pop("dns_sd_configs")
    job["static_configs"] = [{"targets": [target]}]
    job["authorization"]["credentials_file"] = str(token_file)
    return config


def wait_for(condition: Any, what: str, timeout_s: float, poll_s: float = 0.5) -> Any:
    """condition()'s first truthy answer, polled; HTTP errors count as not yet."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            answer = condition()
        except httpx.HTTPError:
            answer = None
        if answer:
            return answer
        time.sleep(poll_s)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def firing(prometheus_url: str, name: str) -> list[dict[str, Any]]:
    alerts = httpx.get(f"{prometheus_url}/api/v1/alerts", timeout=5).json()["data"]["alerts"]
    return [alert for alert in alerts if alert["labels"]["alertname"] == name and alert["state"] == "firing"]


def sampled(prometheus_url: str, query: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = httpx.get(
        f"{prometheus_url}/api/v1/query", params={"query": query}, timeout=5
    ).json()["data"]["result"]
    return found


def stop(process: subprocess.Popen[str]) -> str:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.stdout.read() if process.stdout else ""


async def test_a_real_prometheus_fires_on_an_in_doubt_branch_and_no_leader(
    service: WalletService, topology: Topology, cluster: LocalCluster, tmp_path: Path
) -> None:
    """Protects the whole path from a stuck transfer to a page: Prometheus (Debian's binary)
    scrapes a running `wallet serve` with an admin token from `wallet token issue`, through the
    shipped scrape config; with leadership held away from it, WalletNoLeader fires; a
    coordinator killed between PREPARE and its decision leaves prepared branches and
    WalletInDoubtBranchStuck fires (rules.yml's expressions, `for` and threshold made small);
    once leadership is let go, the service's recovery finishes the branches and both resolve.
    `wallet ledger verify` records its result, and the scrape carries it."""
    prometheus_binary = shutil.which("prometheus")
    assert prometheus_binary, "prometheus is missing: `make develop` installs it (tests/install-system-deps.sh)"
    started = time.time()
    home = tmp_path / "home"
    # Leadership held by this test: the service under test does not lead, so its recovery
    # leaves the branches alone until the test lets go.
    held = LocalLeader(home / "singletons.lock")
    assert held.is_leader()
    port, prometheus_port = free_port(), free_port()
    environment = {
        **os.environ,
        "WALLET_HOME": str(home),
        "WALLET_TOPOLOGY": str(cluster.topology_path),
        "WALLET_PORT": str(port),
        "WALLET_AUTH_SECRET": TEST_SECRET,
        "WALLET_RELAY": "off",
        "WALLET_LOG_LEVEL": "warning",
    }
    issued = subprocess.run(
        [WALLET, "token", "issue", "--owner", "prometheus", "--admin", "--ttl-hours", "1"],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert issued.returncode == 0, issued.stderr
    token_file = tmp_path / "token"
    token_file.touch(mode=0o600)
    token_file.write_text(issued.stdout.strip())
    config_dir = tmp_path / "prometheus"
    config_dir.mkdir()
    (config_dir / "rules.yml").write_text(
        yaml.safe_dump(quick_rules({"WalletInDoubtBranchStuck": "1", "WalletNoLeader": None}))
    )
    (config_dir / "prometheus.yml").write_text(yaml.safe_dump(prometheus_config(f"127.0.0.1:{port}", token_file)))
    everyone = [account for shard in SHARDS for account in accounts_on(topology, shard, 2)]
    await open_accounts(service, everyone, deposit="10.00")

    serve = subprocess.Popen(
        [WALLET, "serve"], env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    prometheus = subprocess.Popen(
        [
            prometheus_binary,
            f"--config.file={config_dir / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{prometheus_port}",
            "--log.level=warn",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{prometheus_port}"
    try:
        wait_for(lambda: httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code == 200, "serve", 60)
        wait_for(lambda: httpx.get(f"{url}/-/ready", timeout=5).status_code == 200, "Prometheus", START_TIMEOUT_S)
        # the scrape passes the token check: the target is up and carries the service's series
        wait_for(lambda: sampled(url, 'up{job="wallet"} == 1'), "a successful scrape", START_TIMEOUT_S)
        assert sampled(url, 'wallet_leader{role="singletons"} == 0')
        assert wait_for(lambda: firing(url, "WalletNoLeader"), "WalletNoLeader firing", FIRING_TIMEOUT_S)
        assert not firing(url, "WalletInDoubtBranchStuck")

        transfers = cross_shard_transfers(topology, everyone, 20, uuid.uuid4())
        kill_at(cluster.topology_path, transfers, "2pc.after_all_prepares", "2pc", tmp_path)
        stuck = wait_for(lambda: firing(url, "WalletInDoubtBranchStuck"), "WalletInDoubtBranchStuck", FIRING_TIMEOUT_S)
        assert {alert["labels"]["shard"] for alert in stuck} <= set(SHARDS)
        assert all(alert["labels"]["severity"] == "page" for alert in stuck)

        verified = subprocess.run(
            [WALLET, "ledger", "verify"], env=environment, capture_output=True, text=True, timeout=120
        )
        assert "hash chain" in verified.stdout, verified.stdout + verified.stderr
        recorded = wait_for(
            lambda: sampled(url, "wallet_ledger_verification_timestamp_seconds"), "the verification", 30
        )
        assert float(recorded[0]["value"][1]) >= started - 1

        held.stop()  # the service leads at its next check, and its recovery finishes the branches
        wait_for(lambda: not firing(url, "WalletInDoubtBranchStuck"), "the in-doubt alert resolved", FIRING_TIMEOUT_S)
        wait_for(lambda: not firing(url, "WalletNoLeader"), "the no-leader alert resolved", FIRING_TIMEOUT_S)
    finally:
        held.stop()
        prometheus_log = stop(prometheus)
        serve_log = stop(serve)
        await service.recover(abort_after_ms=0)  # whatever the test left prepared, for the tests after it
    assert prometheus.returncode == 0, prometheus_log
    assert serve.returncode == 0, serve_log
