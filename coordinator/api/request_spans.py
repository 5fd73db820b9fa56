"""A span per HTTP request (runtime/tracing.py), in the W3C trace context: the caller's
`traceparent` (and `tracestate`) is the span's parent, and every answer carries a
`traceparent` header naming the request's span, so a caller that sent none can still find
its trace.

Only the app built with tracing on passes here (api/app.py): with tracing off, a request
meets none of it.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from coordinator.api.money import money_route
from core.runtime import tracing

TRACEPARENT, TRACESTATE = b"traceparent", b"tracestate"
# A header longer than this is not a trace context (W3C: 55 characters; tracestate at most 512).
TRACE_HEADER_LENGTH_MAX = 512


def route_of(scope: Scope) -> str | None:
    """The route template that served the request: starlette's, or one of the money routes
    (answered before starlette: api/money.py); None for a path no route serves (the span's
    name stays the method: a name per unknown path would have no bound)."""
    route = scope.get("route")
    if route is None:
        return money_route(scope["path"])
    path: str | None = getattr(route, "path", None)
    return path


async def traced(app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
    """Serve the request with `app` inside its span."""
    if scope["type"] != "http":
        await app(scope, receive, send)
        return
    traceparent = tracestate = None
    for name, value in scope["headers"]:
        if name == TRACEPARENT and len(value) <= TRACE_HEADER_LENGTH_MAX:
            traceparent = value.decode("latin-1")
        elif name == TRACESTATE and len(value) <= TRACE_HEADER_LENGTH_MAX:
            tracestate = value.decode("latin-1")
    method: str = scope["method"]
    with tracing.request(method, scope["path"], traceparent, tracestate) as span:
        answered = (TRACEPARENT, tracing.traceparent_of(span.get_span_context()).encode())

        async def send_traced(message: Message) -> None:
            if message["type"] == "http.response.start":
                span.set_attribute("http.response.status_code", message["status"])
                if message["status"] >= 500:
                    tracing.mark_failed(span)
                message = {**message, "headers": [*message.get("headers", ()), answered]}
            await send(message)

        await app(scope, receive, send_traced)
        route = route_of(scope)
        if route is not None:
            span.update_name(f"{method} {route}")
            span.set_attribute("http.route", route)
