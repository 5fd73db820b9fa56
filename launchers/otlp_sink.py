"""A local OTLP/HTTP receiver for development, tests and the benchmark: it takes what a
collector would (`POST /v1/traces`, protobuf, gzip or not), answers 200, counts the spans and
keeps the first SPANS_KEPT_MAX of them to be read back. Loopback, a free port, a thread of its
own; production sends to a real collector (WALLET_OTLP_ENDPOINT).

    with OtlpSink() as sink:          # sink.endpoint: http://127.0.0.1:PORT
        ...                           # processes export to it
        sink.spans                    # ReceivedSpan, in arrival order
"""

from __future__ import annotations

import gzip
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

SPANS_KEPT_MAX = 100_000  # past it spans are counted, not kept
BODY_BYTES_MAX = 64 * 1024 * 1024
TRACES_PATH = "/v1/traces"
Value = str | int | float | bool


@dataclass(frozen=True)
class ReceivedSpan:
    process: str  # the resource's wallet.process (engine, http, relay), or its service.name
    name: str
    trace_id: str  # hex, as in a traceparent
    span_id: str
    parent_span_id: str  # "" for a root span
    links: tuple[tuple[str, str], ...]  # (trace id, span id) of each linked span
    attributes: dict[str, Value] = field(default_factory=dict)


def value_of(value: AnyValue) -> Value:
    kind = value.WhichOneof("value")
    found: Value = getattr(value, kind) if kind in ("string_value", "int_value", "double_value", "bool_value") else ""
    return found


def spans_of(request: ExportTraceServiceRequest) -> list[ReceivedSpan]:
    found = []
    for resource_spans in request.resource_spans:
        resource = {a.key: value_of(a.value) for a in resource_spans.resource.attributes}
        process = str(resource.get("wallet.process", resource.get("service.name", "")))
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                found.append(
                    ReceivedSpan(
                        process,
                        span.name,
                        span.trace_id.hex(),
                        span.span_id.hex(),
                        span.parent_span_id.hex(),
                        tuple((link.trace_id.hex(), link.span_id.hex()) for link in span.links),
                        {a.key: value_of(a.value) for a in span.attributes},
                    )
                )
    return found


class OtlpSink:
    def __init__(self, keep: bool = True) -> None:
        self.keep = keep  # False: count only (the benchmark)
        self.spans: list[ReceivedSpan] = []
        self.spans_received = 0
        self.requests = 0
        self.lock = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive: the exporter reuses its connection

            def do_POST(self) -> None:  # noqa: N802  # http.server's name
                length = int(self.headers.get("content-length", "0"))
                if self.path != TRACES_PATH or not 0 <= length <= BODY_BYTES_MAX:
                    self.send_error(404 if self.path != TRACES_PATH else 413)
                    return
                body = self.rfile.read(length)
                if self.headers.get("content-encoding") == "gzip":
                    body = gzip.decompress(body)
                sink.receive(ExportTraceServiceRequest.FromString(body))
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: object) -> None:
                pass  # quiet: a request a span batch

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="otlp-sink", daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def receive(self, request: ExportTraceServiceRequest) -> None:
        spans = spans_of(request) if self.keep else []
        count = sum(len(scope.spans) for resource in request.resource_spans for scope in resource.scope_spans)
        with self.lock:
            self.requests += 1
            self.spans_received += count
            self.spans.extend(spans[: max(0, SPANS_KEPT_MAX - len(self.spans))])

    def received(self) -> list[ReceivedSpan]:
        with self.lock:
            return list(self.spans)

    def __enter__(self) -> OtlpSink:
        self.thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.server.shutdown()
        self.server.server_close()
