"""Tracing: OpenTelemetry spans, off unless WALLET_OTLP_ENDPOINT names a collector.

Off (the default) it costs nothing: `enabled` is False, `phase()` and the other helpers hand
back one shared no-op context manager without building a span, the HTTP app is built
without its tracing layer (coordinator/api/request_spans.py), and no module of
OpenTelemetry is even imported (runtime/otel.py, the only one that uses it, is imported
once tracing starts). Code on a hot path asks `tracing.enabled` through the module: a copy
taken by `from core.runtime.tracing import enabled` would never change.

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

A round is recorded whenever a request it carries is (otel.LinkedOrParent), so a
sampled request's trace always leads to the round that applied it. Every JSON log line
written while a span is current carries its trace and span ids (runtime/logs.py).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import SpanProcessor
    from opentelemetry.trace import Span, SpanContext
    from opentelemetry.util.types import AttributeValue

    from core.runtime.otel import Spans
    from core.runtime.settings import Settings

enabled = False  # ask it as tracing.enabled: set by start(), cleared by stop()
NULL: AbstractContextManager[None] = contextlib.nullcontext()  # the one no-op, shared by every caller
_spans: Spans | None = None  # while enabled


def configure(settings: Settings, process: str) -> None:
    """Tracing for this process if the settings name a collector (`process` names the process
    in every span's resource: engine, http, relay); nothing otherwise."""
    if settings.otlp_endpoint is None:
        return
    from core.runtime.otel import otlp_export

    start(otlp_export(settings.otlp_endpoint), settings.trace_sample_ratio, process)


def start(processor: SpanProcessor, sample_ratio: float = 1.0, process: str = "wallet") -> None:
    """Spans on; each ended span goes to `processor` (the OTLP export, or a test's in-memory one)."""
    global enabled, _spans
    from core.runtime.otel import spans_to

    assert _spans is None, "tracing is already on: tracing.stop() first"
    _spans = spans_to(processor, sample_ratio, process)
    enabled = True


def stop() -> None:
    """Spans off; what is queued is exported first."""
    global enabled, _spans
    spans, _spans, enabled = _spans, None, False
    if spans is not None:
        spans.provider.shutdown()


def _on() -> Spans:
    assert _spans is not None, "tracing is off: ask tracing.enabled first"
    return _spans


def phase(name: str, **attributes: AttributeValue) -> AbstractContextManager[object]:
    """A span around one step (`2pc.prepare`, shard="shard1"), the child of what is current;
    the shared no-op when tracing is off. An exception leaving it marks the span failed."""
    if not enabled:
        return NULL
    return _on().phase(name, attributes)


def phase_since(started_ns: int, name: str, **attributes: AttributeValue) -> AbstractContextManager[object]:
    """phase(), begun at `started_ns` (time.time_ns()): for a step known to be worth a span
    only once it has found work (a relay round that found rows)."""
    if not enabled:
        return NULL
    return _on().phase(name, attributes, started_ns)


def annotate(**attributes: AttributeValue) -> None:
    """Attributes on the current span, learnt inside it (nothing when tracing is off)."""
    if enabled:
        from core.runtime import otel

        otel.annotate(attributes)


def batch(name: str, size: int, requests: Sequence[SpanContext | None]) -> AbstractContextManager[object]:
    """A batch's span: a trace of its own (no parent), linked to every request it carries."""
    if not enabled:
        return NULL
    return _on().batch(name, size, requests)


def request(method: str, path: str, traceparent: str | None, tracestate: str | None) -> AbstractContextManager[Span]:
    """An HTTP request's span (kind SERVER), the child of the caller's `traceparent` when it
    sends a valid one. Tracing on only (the app asks for it only then)."""
    return _on().request(method, path, traceparent, tracestate)


# Tracing on only, like request(): each imports the OpenTelemetry side where it is.


def link_here() -> SpanContext | None:
    """The current span's context, for a batch to link (None: no span is current)."""
    from core.runtime import otel

    return otel.link_here()


def traceparent_of(context: SpanContext) -> str:
    """The W3C traceparent header naming a span."""
    from core.runtime import otel

    return otel.traceparent_of(context)


def traceparent_here() -> str | None:
    """The current span as a traceparent (to carry it to another process), or None."""
    from core.runtime import otel

    context = otel.link_here()
    return otel.traceparent_of(context) if context is not None else None


def span_context_of(traceparent: str) -> SpanContext | None:
    """The span a traceparent of our own making names (traceparent_of), or None."""
    from core.runtime import otel

    return otel.span_context_of(traceparent)


def remote_parent(traceparent: str) -> AbstractContextManager[None]:
    """What runs inside has `traceparent` (another process's span) as its current span;
    nothing changes for one that names no span."""
    from core.runtime import otel

    return otel.remote_parent(traceparent)


def log_ids() -> tuple[str, str] | None:
    """(trace id, span id) in hex of the current span, for a log line; None without one."""
    from core.runtime import otel

    return otel.log_ids()


def mark_failed(span: Span) -> None:
    """The span's status: failed (a 5xx answer)."""
    from core.runtime import otel

    otel.mark_failed(span)
