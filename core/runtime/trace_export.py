"""The SDK side of tracing (runtime/tracing.py): the tracer provider, its sampler, and the
OTLP/HTTP export. Imported only when tracing is on."""

from __future__ import annotations

from collections.abc import Sequence

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanLimits, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import Decision, ParentBased, Sampler, SamplingResult, TraceIdRatioBased
from opentelemetry.trace import Link, SpanKind, TraceState
from opentelemetry.util.types import Attributes

# A round links at most this many requests (one link per request): a round holds at most
# BATCH_SIZE_MAX transfers, so every request of the largest round is linked.
LINKS_PER_SPAN_MAX = 10_000
# The export: spans queued in memory at most (past it they are dropped, never waited for),
# spans per OTLP request, how often the queue is sent, and how long one send may take.
EXPORT_QUEUE_SIZE_MAX = 65_536
EXPORT_BATCH_SIZE_MAX = 2_048
EXPORT_EVERY_MS = 1_000
EXPORT_TIMEOUT_S = 5.0


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


def provider_of(processor: SpanProcessor, sample_ratio: float, process: str) -> TracerProvider:
    """A provider of our own (not OpenTelemetry's global one), each ended span to `processor`."""
    provider = TracerProvider(
        sampler=LinkedOrParent(sample_ratio),
        resource=Resource.create({"service.name": "wallet", "wallet.process": process}),
        span_limits=SpanLimits(max_links=LINKS_PER_SPAN_MAX),
    )
    provider.add_span_processor(processor)
    return provider


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
