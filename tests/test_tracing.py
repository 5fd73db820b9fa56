"""Tracing (core/runtime/tracing.py) read back from the spans it exports: a transfer in each
mode from its HTTP request (the caller's traceparent honoured and answered) to the round
that applied it (linked) and the phases inside; recovery actions and relay rounds; the trace
id in the JSON logs; sampling; a real OTLP export from `wallet serve`'s processes; and, off,
no span and no OpenTelemetry module at all."""

from __future__ import annotations

import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from coordinator.api.money import TRANSFER_PATH
from coordinator.service.wallet import WalletService
from core.domain.errors import ConfigurationError
from core.runtime import tracing
from core.runtime.settings import Settings
from launchers.otlp_sink import OtlpSink
from launchers.postgres import LocalCluster, free_port
from shard_router.topology import Topology
from tests.helpers import (
    BACKENDS,
    REPOSITORY,
    TEST_SECRET,
    accounts_on,
    app_over,
    bearer,
    captured_logs,
    cross_shard_transfers,
    eventually,
    kill_at,
    open_accounts,
)

REQUEST_SPAN = f"POST {TRANSFER_PATH}"
ROUND_SPAN = "batch round"
MODES = ("local", "2pc", "tcc", "saga")
# The shard-phase spans a transfer of each mode shows inside its round's group. EXTEND HERE:
# as each `tracing.phase(name, ...)` call lands in the protocols (two_phase.py, one_shard.py,
# branch_flow.py, branch_steps.py, tcc.py, saga.py), add its name to its modes' lists; the
# test then requires it, inside the round's trace, below the group.
PHASE_SPANS: dict[str, list[str]] = {
    "local": ["local.transaction", "local.write"],
    "2pc": ["2pc.lock", "2pc.write", "2pc.prepare", "2pc.decide", "2pc.commit_prepared"],
    "tcc": ["tcc.try_debit", "tcc.try_credit", "tcc.decide_debit", "tcc.confirm_credit", "tcc.mark_done"],
    "saga": ["saga.try_debit", "saga.try_credit", "saga.decide_debit"],
}


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Tracing on for the test, every ended span kept in memory."""
    exporter = InMemorySpanExporter()
    tracing.start(SimpleSpanProcessor(exporter), process="test")
    try:
        yield exporter
    finally:
        tracing.stop()


def attribute(span: ReadableSpan, key: str) -> Any:
    """One of the span's attributes (None: not set)."""
    return (span.attributes or {}).get(key)


def caller_context() -> tuple[str, str]:
    """A caller's own (trace id, span id), as its traceparent would carry them."""
    return secrets.token_hex(16), secrets.token_hex(8)


def named(spans: tuple[ReadableSpan, ...] | list[ReadableSpan], name: str) -> list[ReadableSpan]:
    return [span for span in spans if span.name == name]


def round_linking(spans: tuple[ReadableSpan, ...], request: ReadableSpan) -> ReadableSpan:
    """The one round whose links include `request`."""
    assert request.context is not None
    found = [
        span
        for span in named(spans, ROUND_SPAN)
        if any(link.context.span_id == request.context.span_id for link in span.links)
    ]
    assert len(found) == 1, [(span.name, span.links) for span in named(spans, ROUND_SPAN)]
    return found[0]


def accounts_for(mode: str, topology: Topology) -> tuple[str, str]:
    """A source and a target: on one shard for a local transfer, on two for the others."""
    [source] = accounts_on(topology, "shard0", 1)
    [target] = accounts_on(topology, "shard0" if mode == "local" else "shard1", 1)
    return source, target


async def transfer_over_http(
    backend: str, settings: Settings, service: WalletService, body: dict[str, str], traceparent: str | None
) -> httpx.Response:
    headers = {"traceparent": traceparent} if traceparent else {}
    async with app_over(backend, settings, service) as app:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://wallet.test", headers=bearer()) as http:
            return await http.post(TRANSFER_PATH, json=body, headers=headers)


def body_of(source: str, target: str, mode: str) -> dict[str, str]:
    body = {
        "from_account": source,
        "to_account": target,
        "amount": "1.25",
        "currency": "USD",
        "transaction_id": str(uuid.uuid4()),
    }
    return body if mode == "local" else {**body, "mode": mode}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode", MODES)
async def test_a_transfer_in_each_mode_is_traced_from_its_request_to_its_round(
    spans: InMemorySpanExporter,
    service: WalletService,
    settings: Settings,
    topology: Topology,
    mode: str,
    backend: str,
) -> None:
    """Protects the trace of a transfer: the request span is the child of the caller's
    traceparent and names itself in the answer's; the round that applied the transfer links
    it (over the engine link too); the round's group and the phases inside it are there."""
    source, target = accounts_for(mode, topology)
    await open_accounts(service, [source, target], deposit="10.00")
    spans.clear()
    trace_id, parent_id = caller_context()

    response = await transfer_over_http(
        backend, settings, service, body_of(source, target, mode), f"00-{trace_id}-{parent_id}-01"
    )

    assert response.status_code == 200, response.text
    assert response.json()["protocol"] == mode
    finished = spans.get_finished_spans()
    [request] = named(finished, REQUEST_SPAN)
    assert request.kind == SpanKind.SERVER and request.context is not None and request.parent is not None
    assert f"{request.context.trace_id:032x}" == trace_id, "the caller's trace goes on"
    assert f"{request.parent.span_id:016x}" == parent_id and request.parent.is_remote
    assert response.headers["traceparent"] == f"00-{trace_id}-{request.context.span_id:016x}-01"
    assert request.attributes is not None
    assert request.attributes["http.route"] == TRANSFER_PATH and request.attributes["http.response.status_code"] == 200

    applied = round_linking(finished, request)
    assert applied.parent is None and applied.context is not None, "a round is a trace of its own"
    assert [link.context.trace_id for link in applied.links] == [request.context.trace_id]
    assert applied.attributes is not None and applied.attributes["wallet.items"] == 1
    in_round = [
        span for span in finished if span.context is not None and span.context.trace_id == applied.context.trace_id
    ]
    [group] = named(in_round, f"group {'shard0' if mode == 'local' else mode}")
    assert group.parent is not None and group.parent.span_id == applied.context.span_id
    shown = {span.name for span in in_round}
    missing = [name for name in PHASE_SPANS[mode] if name not in shown]
    assert not missing, f"{mode}: no {missing} span in the round (it has {sorted(shown)})"


async def test_every_json_log_line_of_a_traced_request_carries_its_trace(
    spans: InMemorySpanExporter, service: WalletService, settings: Settings, topology: Topology
) -> None:
    """Protects following a transfer from the logs into its trace: every line logged while
    serving it names a trace, the request's lines the caller's, the protocol's its round's."""
    source, target = accounts_for("2pc", topology)
    await open_accounts(service, [source, target], deposit="10.00")
    spans.clear()
    trace_id, parent_id = caller_context()
    with captured_logs(logging.DEBUG) as captured:
        response = await transfer_over_http(
            "local", settings, service, body_of(source, target, "2pc"), f"00-{trace_id}-{parent_id}-01"
        )
    assert response.status_code == 200, response.text
    lines = [json.loads(line) for line in captured.getvalue().splitlines()]
    assert lines and all("trace_id" in line and "span_id" in line for line in lines), lines
    [answered] = [line for line in lines if line["message"] == "transfer answered"]
    assert answered["trace_id"] == trace_id
    [request] = named(spans.get_finished_spans(), REQUEST_SPAN)
    applied = round_linking(spans.get_finished_spans(), request)
    assert applied.context is not None
    committed = [line for line in lines if line.get("phase") == "2pc.committed"]
    assert committed and all(line["trace_id"] == f"{applied.context.trace_id:032x}" for line in committed)


async def test_a_round_is_recorded_whenever_a_request_it_carries_is(
    service: WalletService, settings: Settings, topology: Topology
) -> None:
    """Protects sampling: at ratio 0 a request whose caller sampled it is recorded, and so is
    the round that applied it; a request nobody sampled, and its round, are not."""
    exporter = InMemorySpanExporter()
    tracing.start(SimpleSpanProcessor(exporter), sample_ratio=0.0)
    try:
        source, target = accounts_for("local", topology)
        await open_accounts(service, [source, target], deposit="10.00")
        exporter.clear()
        trace_id, parent_id = caller_context()
        sampled = await transfer_over_http(
            "local", settings, service, body_of(source, target, "local"), f"00-{trace_id}-{parent_id}-01"
        )
        [request] = named(exporter.get_finished_spans(), REQUEST_SPAN)
        round_linking(exporter.get_finished_spans(), request)
        exporter.clear()
        unsampled = await transfer_over_http("local", settings, service, body_of(source, target, "local"), None)
        assert named(exporter.get_finished_spans(), REQUEST_SPAN) == []
        assert named(exporter.get_finished_spans(), ROUND_SPAN) == []
        flags = int(unsampled.headers["traceparent"].rsplit("-", 1)[1], 16)
        assert flags & 1 == 0, "the answer says it was not sampled"
    finally:
        tracing.stop()
    assert sampled.status_code == unsampled.status_code == 200


async def test_recovery_actions_are_spans(
    spans: InMemorySpanExporter, service: WalletService, topology: Topology
) -> None:
    """Protects the trace of recovery: an undecided prepared branch is fenced (`recovery.abort`)
    and rolled back inside `recovery.finish`, each action a span naming its batch and branch."""
    from shards import two_phase as two_phase_sql
    from shards.pool import connect

    batch_id = str(uuid.uuid4())
    gid = two_phase_sql.make_gid(batch_id, "shard0", "shard1")
    branch = await connect(topology.shards["shard1"])
    try:
        await two_phase_sql.begin(branch)
        await two_phase_sql.prepare(branch, gid)  # a coordinator died after PREPARE, before deciding
        report = await service.recover(abort_after_ms=0)
    finally:
        await two_phase_sql.rollback_prepared(branch, gid)  # a no-op once recovery did it
        await branch.close()
    assert report.rolled_back >= 1
    finished = spans.get_finished_spans()
    [abort] = [
        span
        for span in named(finished, "recovery.abort")
        if span.attributes == {"wallet.batch_id": batch_id, "wallet.decision_shard": "shard0"}
    ]
    [finish] = [s for s in named(finished, "recovery.finish") if attribute(s, "wallet.batch_id") == batch_id]
    assert finish.attributes is not None and finish.attributes["wallet.decision"] == "abort"
    [rolled_back] = [s for s in named(finished, "recovery.rollback_prepared") if attribute(s, "wallet.gid") == gid]
    assert finish.context is not None and rolled_back.parent is not None
    assert rolled_back.parent.span_id == finish.context.span_id
    assert abort.end_time is not None and finish.start_time is not None and abort.end_time <= finish.start_time


async def test_resuming_an_unfinished_tcc_transfer_is_a_span(
    spans: InMemorySpanExporter, service: WalletService, cluster: LocalCluster, tmp_path
) -> None:
    """Protects the trace of recovery driving TC/C on: a coordinator killed after the debit's
    Try leaves a hold, and the pass that finishes it is a `recovery.resume` span."""
    topology = cluster.topology
    accounts = accounts_on(topology, "shard0", 2) + accounts_on(topology, "shard1", 2)
    await open_accounts(service, accounts, deposit="50.00")
    transfers = cross_shard_transfers(topology, accounts, 4, "tracing")
    kill_at(cluster.topology_path, transfers, "tcc.after_try_debit", "tcc", tmp_path)
    spans.clear()
    report = await service.recover(abort_after_ms=0)
    assert report.resumed >= 1
    resumed = named(spans.get_finished_spans(), "recovery.resume")
    assert resumed and all(attribute(span, "wallet.unfinished") >= 1 for span in resumed)


async def test_a_relay_round_that_finds_rows_is_a_span(
    spans: InMemorySpanExporter, service: WalletService, topology: Topology
) -> None:
    """Protects the trace of the relay: a stream's round that moves outbox rows into the
    ledger is a `relay.round` span naming the stream, its rows and its ledger server; a round
    that finds nothing is none (the relay polls every 200 ms)."""
    assert service.ledger is not None
    [account] = accounts_on(topology, "shard2", 1)
    await open_accounts(service, [account], deposit="1.00")
    await service.ledger.drain()
    relayed = named(spans.get_finished_spans(), "relay.round")
    assert any(attribute(span, "wallet.stream") == "shard2" for span in relayed), relayed
    assert all(attribute(span, "wallet.rows") >= 1 for span in relayed)
    assert all("wallet.ledger" in (span.attributes or {}) for span in relayed)
    spans.clear()
    assert await service.ledger.drain() == 0
    assert named(spans.get_finished_spans(), "relay.round") == []


@pytest.mark.cluster
def test_wallet_serve_exports_the_trace_of_a_transfer_over_otlp(cluster: LocalCluster) -> None:
    """Protects tracing as deployed: `wallet serve` with WALLET_OTLP_ENDPOINT sends, over
    OTLP/HTTP to a real receiver, the HTTP process's request span (the caller's trace), the
    engine's round linked to it across the engine link, and the relay process's round."""
    import asyncio

    from coordinator.service.wallet import WalletService

    topology = cluster.topology
    source, target = accounts_for("2pc", topology)

    async def open_both() -> None:
        async with WalletService(topology, Settings(home=cluster.home, topology_path=cluster.topology_path)) as opened:
            await open_accounts(opened, [source, target], deposit="10.00")

    asyncio.run(open_both())
    port = free_port()
    with OtlpSink() as sink:
        environment = {
            **{k: v for k, v in os.environ.items() if not k.startswith("WALLET_")},
            "WALLET_HOME": str(cluster.home),
            "WALLET_TOPOLOGY": str(cluster.topology_path),
            "WALLET_PORT": str(port),
            "WALLET_AUTH_SECRET": TEST_SECRET,
            "WALLET_OTLP_ENDPOINT": sink.endpoint,
            "WALLET_LOG_LEVEL": "warning",
        }
        server = subprocess.Popen(
            [sys.executable, "-m", "coordinator.cli.main", "serve"], cwd=REPOSITORY, env=environment
        )
        try:
            url = f"http://127.0.0.1:{port}"
            eventually(lambda: ready(url), "wallet serve to be ready", 60, poll_s=0.2)
            trace_id, parent_id = caller_context()
            response = httpx.post(
                url + TRANSFER_PATH,
                json=body_of(source, target, "2pc"),
                headers={**bearer(), "traceparent": f"00-{trace_id}-{parent_id}-01"},
                timeout=30,
            )
            assert response.status_code == 200, response.text
            answered = response.headers["traceparent"]
            eventually(lambda: any(s.process == "relay" for s in sink.received()), "the relay's round", 30)
        finally:
            server.send_signal(signal.SIGINT)
            server.wait(timeout=60)
        received = sink.received()
    [request] = [s for s in received if s.name == REQUEST_SPAN and s.trace_id == trace_id]
    assert request.process == "http" and request.parent_span_id == parent_id
    assert answered == f"00-{trace_id}-{request.span_id}-01"
    [applied] = [s for s in received if s.name == ROUND_SPAN and (trace_id, request.span_id) in s.links]
    assert applied.process == "engine" and applied.parent_span_id == ""
    assert any(s.name == "group 2pc" and s.parent_span_id == applied.span_id for s in received)
    assert any(s.name == "relay.round" and s.process == "relay" for s in received)


def ready(url: str) -> bool:
    try:
        return httpx.get(url + "/readyz", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def test_off_it_builds_no_span_and_imports_no_opentelemetry() -> None:
    """Protects the cost of tracing off: the app is built without its tracing layer, every
    helper is the shared no-op, a batch goes through group commit, and no module of
    OpenTelemetry is ever imported (a fresh process, since this one has imported them)."""
    probe = """
import asyncio, sys
from coordinator.api.app import WalletApp, build_app
from coordinator.service.group_commit import BatchApplier
from core.runtime import tracing
from core.runtime.settings import BatchLimits, Settings

app = build_app(Settings(auth_secret=sys.argv[1]), backend=object())
assert type(app) is WalletApp, type(app)
assert tracing.phase("2pc.prepare", shard="shard0") is tracing.NULL
assert tracing.batch("round", 1, [None]) is tracing.NULL

async def run():
    async def double(items):
        return [2 * item for item in items]
    applier = BatchApplier("probe", double, BatchLimits())
    applier.start()
    assert await applier.submit(21) == 42
    await applier.stop()

asyncio.run(run())
print(sorted(name for name in sys.modules if name.startswith("opentelemetry")))
"""
    completed = subprocess.run(
        [sys.executable, "-c", probe, TEST_SECRET], cwd=REPOSITORY, capture_output=True, text=True, timeout=60
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "[]"


def test_a_tracing_setting_that_cannot_be_used_is_refused() -> None:
    """Protects operators from a silent mistake: a collector that is no URL, a ratio out of 0..1."""
    with pytest.raises(ConfigurationError, match="WALLET_OTLP_ENDPOINT must be an http:// or https:// URL"):
        Settings.from_environment({"WALLET_OTLP_ENDPOINT": "collector:4318"})
    with pytest.raises(ConfigurationError, match="WALLET_TRACE_SAMPLE_RATIO must be in 0..1"):
        Settings.from_environment({"WALLET_TRACE_SAMPLE_RATIO": "2"})
    chosen = Settings.from_environment({"WALLET_OTLP_ENDPOINT": "http://collector:4318"})
    assert chosen.otlp_endpoint == "http://collector:4318" and Settings().otlp_endpoint is None


def test_spans_reach_a_collector_over_otlp() -> None:
    """Protects the export itself: tracing configured from the settings sends its spans to the
    endpoint's /v1/traces, and what is queued is sent when tracing stops."""
    with OtlpSink() as sink:
        tracing.configure(Settings(otlp_endpoint=sink.endpoint), "test")
        try:
            with tracing.phase("2pc.prepare", shard="shard1"):
                pass
        finally:
            tracing.stop()
        [span] = sink.received()
    assert (span.process, span.name, span.attributes) == ("test", "2pc.prepare", {"wallet.shard": "shard1"})


def test_a_traceparent_crossing_the_engine_link_is_parsed_strictly() -> None:
    """Protects the engine from a malformed traceparent: only a version-00 header with a valid
    trace and span id names a span; anything else leaves the call without a parent."""
    sent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    context = tracing.span_context_of(sent)
    assert context is not None and context.is_remote and tracing.traceparent_of(context) == sent
    for malformed in (
        "",
        "garbage",
        "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e47zz-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
    ):
        assert tracing.span_context_of(malformed) is None, malformed
