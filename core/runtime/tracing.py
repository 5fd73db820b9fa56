"""Tracing: OpenTelemetry spans, off unless WALLET_OTLP_ENDPOINT names a collector.

Off (the default) it costs nothing: `enabled` is False, `phase()` and the other helpers hand
back one shared no-op context manager without building a span, the HTTP app is built
without its tracing layer (coordinator/api/request_spans.py), and the SDK is never imported
(runtime/trace_export.py). Code on a hot path asks `tracing.enabled` through the module: a
copy taken by `from core.runtime.tracing import enabled` would never change.

On, a process exports its spans over OTLP/HTTP in batches, from the SDK's own thread, out of
a bounded queue (spans past it are dropped, never waited for):

  request   `POST /v1/wallet/balance_transfer`, one per HTTP request: the caller's W3C
            `traceparent` is its parent, and the response's `traceparent` names it
  batch     `batch round`, one per round of transfers (and per shared record read): a round
            carries the requests of many traces, so it is a trace of its own, LINKED to each
            request it carries (service/group_commit.py queues each request's span context
            with its items; across the engine link it travels as a traceparent)
  group     `group shard0`, `group 2pc`: a round's groups (service/rounds.py)
  phase     `phase(name, **attributes)`: a protocol's step on its shards
  recovery  `recovery.finish`, `recovery.abort`, `recovery.resume` (protocols/recovery.py)
  relay     `relay.round`: one stream's round of the ledger relay (ledger/relay.py)

A round is recorded whenever a request it carries is (trace_export.LinkedOrParent), so a
sampled request's trace always leads to the round that applied it. Every JSON log line
written while a span is current carries its trace and span ids (runtime/logs.py).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Link, NonRecordingSpan, Span, SpanContext, SpanKind, TraceFlags, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import AttributeValue

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import SpanProcessor, TracerProvider

    from core.runtime.settings import Settings

ATTRIBUTE_PREFIX = "wallet."  # of every attribute phase() and batch() set

enabled = False  # ask it as tracing.enabled: set by start(), cleared by stop()
NULL: AbstractContextManager[None] = contextlib.nullcontext()  # the one no-op, shared by every caller
_tracer: Tracer = trace.NoOpTracer()
_provider: TracerProvider | None = None
_propagator = TraceContextTextMapPropagator()


def configure(settings: Settings, process: str) -> None:
    """Tracing for this process if the settings name a collector (`process` names the process
    in every span's resource: engine, http, relay); nothing otherwise."""
    if settings.otlp_endpoint is None:
        return
    from core.runtime.trace_export import otlp_export

    start(otlp_export(settings.otlp_endpoint), settings.trace_sample_ratio, process)


def start(processor: SpanProcessor, sample_ratio: float = 1.0, process: str = "wallet") -> None:
    """Spans on; each ended span goes to `processor` (the OTLP export, or a test's in-memory one)."""
    global enabled, _tracer, _provider
    from core.runtime.trace_export import provider_of

    assert _provider is None, "tracing is already on: tracing.stop() first"
    _provider = provider_of(processor, sample_ratio, process)
    _tracer = _provider.get_tracer("wallet")
    enabled = True


def stop() -> None:
    """Spans off; what is queued is exported first."""
    global enabled, _tracer, _provider
    provider, _provider = _provider, None
    enabled, _tracer = False, trace.NoOpTracer()
    if provider is not None:
        provider.shutdown()


def attributes_of(attributes: dict[str, AttributeValue]) -> dict[str, AttributeValue]:
    return {ATTRIBUTE_PREFIX + key: value for key, value in attributes.items()}


def phase(name: str, **attributes: AttributeValue) -> AbstractContextManager[object]:
    """A span around one step (`2pc.prepare`, shard="shard1"), the child of what is current;
    the shared no-op when tracing is off. An exception leaving it marks the span failed."""
    if not enabled:
        return NULL
    return _tracer.start_as_current_span(name, attributes=attributes_of(attributes))


def phase_since(started_ns: int, name: str, **attributes: AttributeValue) -> AbstractContextManager[object]:
    """phase(), begun at `started_ns` (time.time_ns()): for a step known to be worth a span
    only once it has found work (a relay round that found rows)."""
    if not enabled:
        return NULL
    return _tracer.start_as_current_span(name, attributes=attributes_of(attributes), start_time=started_ns)


def annotate(**attributes: AttributeValue) -> None:
    """Attributes on the current span, learnt inside it (nothing when tracing is off)."""
    if enabled:
        trace.get_current_span().set_attributes(attributes_of(attributes))


def link_here() -> SpanContext | None:
    """The current span's context, for a batch to link (None: no span is current)."""
    context = trace.get_current_span().get_span_context()
    return context if context.is_valid else None


def batch(name: str, size: int, requests: Sequence[SpanContext | None]) -> AbstractContextManager[object]:
    """A batch's span: a trace of its own (no parent), linked to every request it carries."""
    if not enabled:
        return NULL
    linked = {(c.trace_id, c.span_id): c for c in requests if c is not None}  # each request once
    links = [Link(context) for context in linked.values()]
    return _tracer.start_as_current_span(
        f"batch {name}",
        context=otel_context.Context(),
        links=links,
        attributes=attributes_of({"batch": name, "items": size, "requests": len(requests)}),
    )


def request(method: str, path: str, traceparent: str | None, tracestate: str | None) -> AbstractContextManager[Span]:
    """An HTTP request's span (kind SERVER), the child of the caller's `traceparent` when it
    sends a valid one."""
    carrier = {"traceparent": traceparent or "", "tracestate": tracestate or ""}
    return _tracer.start_as_current_span(
        method,
        context=_propagator.extract(carrier) if traceparent else otel_context.Context(),
        kind=SpanKind.SERVER,
        attributes={"http.request.method": method, "url.path": path},
    )


def traceparent_of(context: SpanContext) -> str:
    """The W3C traceparent header naming a span."""
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


def traceparent_here() -> str | None:
    """The current span as a traceparent (to carry it to another process), or None."""
    context = link_here()
    return traceparent_of(context) if context is not None else None


def span_context_of(traceparent: str) -> SpanContext | None:
    """The span a traceparent of our own making names (traceparent_of), or None. The engine
    parses one per call: here, in a fifth less time than the propagator's regular expression
    and tracestate take."""
    version, trace_hex, span_hex, flags_hex = traceparent.split("-") if traceparent.count("-") == 3 else ("",) * 4
    if version != "00" or len(trace_hex) != 32 or len(span_hex) != 16 or len(flags_hex) != 2:
        return None
    try:
        context = SpanContext(int(trace_hex, 16), int(span_hex, 16), True, TraceFlags(int(flags_hex, 16)))
    except ValueError:
        return None
    return context if context.is_valid else None


@contextlib.contextmanager
def remote_parent(traceparent: str) -> Iterator[None]:
    """What runs inside has `traceparent` (another process's span, from traceparent_of) as its
    current span; nothing changes for one that names no span."""
    context = span_context_of(traceparent)
    if context is None:
        yield
        return
    token = otel_context.attach(trace.set_span_in_context(NonRecordingSpan(context)))
    try:
        yield
    finally:
        otel_context.detach(token)


def log_ids() -> tuple[str, str] | None:
    """(trace id, span id) in hex of the current span, for a log line; None without one."""
    context = trace.get_current_span().get_span_context()
    return (f"{context.trace_id:032x}", f"{context.span_id:016x}") if context.is_valid else None
