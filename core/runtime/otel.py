"""The OpenTelemetry side of tracing (runtime/tracing.py, which imports this module only once
tracing is on): the spans, our own tracer provider and its sampler, W3C traceparents, and
the OTLP/HTTP export."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanLimits, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import Decision, ParentBased, Sampler, SamplingResult, TraceIdRatioBased
from opentelemetry.trace import Link, NonRecordingSpan, Span, SpanContext, SpanKind, TraceFlags, TraceState
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import Attributes, AttributeValue

ATTRIBUTE_PREFIX = "wallet."  # of every attribute phase() and batch() set
# A round links at most this many requests (one link per request): a round holds at most
# BATCH_SIZE_MAX transfers, so every request of the largest round is linked.
LINKS_PER_SPAN_MAX = 10_000
# The export: spans queued in memory at most (past it they are dropped, never waited for),
# spans per OTLP request, how often the queue is sent, and how long one send may take.
EXPORT_QUEUE_SIZE_MAX = 65_536
EXPORT_BATCH_SIZE_MAX = 2_048
EXPORT_EVERY_MS = 1_000
EXPORT_TIMEOUT_S = 5.0


Spanning = AbstractContextManager[Span]


def attributes_of(attributes: dict[str, AttributeValue]) -> dict[str, AttributeValue]:
    return {ATTRIBUTE_PREFIX + key: value for key, value in attributes.items()}


class Spans:
    """What runtime/tracing.py asks for while tracing is on, over one tracer provider."""

    def __init__(self, provider: TracerProvider) -> None:
        self.provider = provider
        self.tracer = provider.get_tracer("wallet")
        self.propagator = TraceContextTextMapPropagator()

    def phase(self, name: str, attributes: dict[str, AttributeValue], started_ns: int | None = None) -> Spanning:
        return self.tracer.start_as_current_span(name, attributes=attributes_of(attributes), start_time=started_ns)

    def batch(self, name: str, size: int, requests: Sequence[SpanContext | None]) -> Spanning:
        """A trace of its own (no parent), linked to each request once."""
        linked = {(c.trace_id, c.span_id): c for c in requests if c is not None}
        return self.tracer.start_as_current_span(
            f"batch {name}",
            context=Context(),
            links=[Link(context) for context in linked.values()],
            attributes=attributes_of({"batch": name, "items": size, "requests": len(requests)}),
        )

    def request(self, method: str, path: str, traceparent: str | None, tracestate: str | None) -> Spanning:
        carrier = {"traceparent": traceparent or "", "tracestate": tracestate or ""}
        return self.tracer.start_as_current_span(
            method,
            context=self.propagator.extract(carrier) if traceparent else Context(),
            kind=SpanKind.SERVER,
            attributes={"http.request.method": method, "url.path": path},
        )


def annotate(attributes: dict[str, AttributeValue]) -> None:
    trace.get_current_span().set_attributes(attributes_of(attributes))


def link_here() -> SpanContext | None:
    context = trace.get_current_span().get_span_context()
    return context if context.is_valid else None


def traceparent_of(context: SpanContext) -> str:
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


def span_context_of(traceparent: str) -> SpanContext | None:
    """Parsed here, not by the propagator: the engine parses one per call, and this takes a
    fifth less time than the propagator's regular expression and tracestate."""
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
    context = trace.get_current_span().get_span_context()
    return (f"{context.trace_id:032x}", f"{context.span_id:016x}") if context.is_valid else None


def mark_failed(span: Span) -> None:
    span.set_status(trace.StatusCode.ERROR)


class LinkedOrParent(Sampler):
    """A span with no parent that links a sampled span is sampled (a round carrying a sampled
    request: the request's trace must lead to it); otherwise its parent decides, and a root
    is sampled at `ratio`."""

    def __init__(self, ratio: float) -> None:
        self.ratio = ratio
        self.otherwise = ParentBased(TraceIdRatioBased(ratio))

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        parent = trace.get_current_span(parent_context).get_span_context()
        if not parent.is_valid and links and any(link.context.trace_flags.sampled for link in links):
            return SamplingResult(Decision.RECORD_AND_SAMPLE, attributes)
        return self.otherwise.should_sample(parent_context, trace_id, name, kind, attributes, links, trace_state)

    def get_description(self) -> str:
        return f"LinkedOrParent{{{self.ratio}}}"


def spans_to(processor: SpanProcessor, sample_ratio: float, process: str) -> Spans:
    """Spans from a provider of our own (not OpenTelemetry's global one), each ended one to `processor`."""
    provider = TracerProvider(
        sampler=LinkedOrParent(sample_ratio),
        resource=Resource.create({"service.name": "wallet", "wallet.process": process}),
        span_limits=SpanLimits(max_links=LINKS_PER_SPAN_MAX),
    )
    provider.add_span_processor(processor)
    return Spans(provider)


def traces_url(endpoint: str) -> str:
    """The collector's traces URL: `http://collector:4318` means its `/v1/traces`."""
    base = endpoint.rstrip("/")
    return base if base.endswith("/v1/traces") else base + "/v1/traces"


def otlp_export(endpoint: str) -> SpanProcessor:
    """Spans to the collector at `endpoint` over OTLP/HTTP, in batches, from the SDK's thread."""
    return BatchSpanProcessor(
        OTLPSpanExporter(endpoint=traces_url(endpoint), timeout=EXPORT_TIMEOUT_S),
        max_queue_size=EXPORT_QUEUE_SIZE_MAX,
        max_export_batch_size=EXPORT_BATCH_SIZE_MAX,
        schedule_delay_millis=EXPORT_EVERY_MS,
        export_timeout_millis=int(EXPORT_TIMEOUT_S * 1000),
    )
