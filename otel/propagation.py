"""Trace-context carriers: the query string, HTTP/WebSocket headers, and the frame `trace` object.

Context from the client side (query string, frames) is untrusted: only the W3C `traceparent`
is read, size-capped, and anything malformed simply starts a fresh trace. Its sampled flag and
any `tracestate` or baggage are dropped: what is traced is the server's decision
(`otel.sampling`), and a client's vendor state must not travel on to our other services.
Headers between our own services go through the globally configured propagators
(`OTEL_PROPAGATORS`, so a legacy `uber-trace-id` peer can join with `jaeger`).
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any

from opentelemetry import propagate
from opentelemetry.context import Context
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    Span,
    SpanContext,
    TraceFlags,
    get_current_span,
    set_span_in_context,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from otel.names import Attr, ClientContext, LinkRole
from otel.sampling import with_decision

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
FRAME_TRACE_KEY = "trace"  # frames carry {"trace": {"traceparent": ..., "tracestate": ...}}

_MAX_TRACEPARENT = 55  # 00-<32 hex>-<16 hex>-<2 hex>
_W3C = TraceContextTextMapPropagator()


def _client_span_context(source: Mapping[str, Any] | None) -> tuple[str, SpanContext | None]:
    """What a client-controlled mapping (query params, a frame's `trace` object) holds:
    (`none`, None) without a `traceparent`, (`malformed`, None) for one we cannot read, else
    (`continued`, its span context with the client's own flags)."""
    if not isinstance(source, Mapping) or source.get(TRACEPARENT) is None:
        return ClientContext.NONE, None
    parent = source.get(TRACEPARENT)
    if not isinstance(parent, str) or len(parent) > _MAX_TRACEPARENT:
        return ClientContext.MALFORMED, None
    try:
        ctx = _W3C.extract({TRACEPARENT: parent.strip()}, context=Context())
    except (ValueError, TypeError):  # the propagator validates, but never trust a parser
        return ClientContext.MALFORMED, None
    span_context = get_current_span(ctx).get_span_context()
    if not span_context.is_valid:
        return ClientContext.MALFORMED, None
    return ClientContext.CONTINUED, span_context


def untrusted_span_context(source: Mapping[str, Any] | None) -> SpanContext | None:
    """The client's span from a client-controlled mapping (query params, a frame's `trace`
    object), or None when absent or malformed. The client's flags and trace state are not
    kept: it is marked sampled, so a client cannot switch tracing off with `-00`; a server
    that samples applies its own decision on top (`otel.sampling.with_decision`)."""
    _, span_context = _client_span_context(source)
    return None if span_context is None else _as_sampled(span_context)


def _as_sampled(span_context: SpanContext) -> SpanContext:
    """The client's span, its own flags and trace state dropped: marked sampled."""
    return SpanContext(
        span_context.trace_id,
        span_context.span_id,
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
    )


def extract_untrusted(source: Mapping[str, Any] | None) -> Context:
    """Context to continue a client's span (an empty context when there is none).

    Every key but `traceparent` is ignored, and the client's sampled flag with it.
    """
    span_context = untrusted_span_context(source)
    if span_context is None:
        return Context()
    return set_span_in_context(NonRecordingSpan(span_context), Context())


class TraceIds:
    """Trace ids that clients' context has already started here (bounded, oldest forgotten).

    In `continue` mode a client chooses the trace id of its message: one that an earlier
    message or connection already used would put this message's spans into that trace
    (someone else's). Such context is not joined: the span starts a trace of its own."""

    def __init__(self, capacity: int = 65_536) -> None:
        self._capacity = capacity
        self._seen: dict[int, None] = {}

    def first_use(self, trace_id: int) -> bool:
        """Record `trace_id`; False when it was already used."""
        if trace_id in self._seen:
            return False
        if len(self._seen) >= self._capacity:
            del self._seen[next(iter(self._seen))]
        self._seen[trace_id] = None
        return True


@dataclass(frozen=True)
class ClientParent:
    """Where a server span for a client's request starts (with the server's decision), its
    links, and what the client's trace context was (`chat.client.*`, for the audit)."""

    context: Context
    links: list[Link]
    attributes: dict[str, str | bool]

    @property
    def client(self) -> SpanContext | None:
        """The client span this one continues, if any."""
        return remote_span_context(self.context)


def client_parent(
    source: Mapping[str, Any] | None,
    *,
    keep: bool,
    link: bool,
    trace_ids: TraceIds | None = None,
) -> ClientParent:
    """Under the client's span, or (`link`) in a trace of our own that links to it; with
    `trace_ids`, a trace id already used starts a trace of our own, joined to nothing. The
    client's flags decide nothing but are recorded: sampled=false says it kept no span."""
    state, client = _client_span_context(source)
    if client is not None and trace_ids is not None and not trace_ids.first_use(client.trace_id):
        state, client = ClientContext.REUSED, None
    attributes: dict[str, str | bool] = {Attr.CLIENT_CONTEXT: state}
    if client is None:
        return ClientParent(with_decision(Context(), keep), [], attributes)
    attributes[Attr.CLIENT_SAMPLED] = client.trace_flags.sampled
    ours = _as_sampled(client)
    if link:
        attributes[Attr.CLIENT_CONTEXT] = ClientContext.LINKED
        links = [Link(ours, {Attr.LINK_ROLE: LinkRole.CLIENT})]
        return ClientParent(with_decision(Context(), keep), links, attributes)
    parent = set_span_in_context(NonRecordingSpan(ours), Context())
    return ClientParent(with_decision(parent, keep), [], attributes)


def gateway_links(headers: Mapping[str, Any]) -> list[Link]:
    """A link to the span of the gateway in front of us (its `traceparent` header). The
    gateway starts its own trace for a browser, which cannot send headers, so the link is
    what ties it to the connection; parsed like client context, since a client could send
    the header itself when nothing stands in front."""
    gateway = untrusted_span_context(headers)
    return [] if gateway is None else [Link(gateway, {Attr.LINK_ROLE: LinkRole.FRONT_GATEWAY})]


def w3c_carrier(span_or_context: Span | Context) -> dict[str, str]:
    """`{"traceparent": ..., "tracestate"?: ...}` for a span, for query strings and frames."""
    ctx = (
        span_or_context
        if isinstance(span_or_context, Context)
        else set_span_in_context(span_or_context)
    )
    carrier: dict[str, str] = {}
    _W3C.inject(carrier, context=ctx)
    return carrier


def extract_frame(frame: Mapping[str, Any]) -> Context:
    """Context carried by a client frame's `trace` object (may be absent or malformed)."""
    return extract_untrusted(frame.get(FRAME_TRACE_KEY))


def inject_frame(frame: MutableMapping[str, Any], span: Span) -> None:
    """Rewrite a frame's `trace` object with `span` as the parent for the next layer."""
    frame[FRAME_TRACE_KEY] = w3c_carrier(span)


def inject_headers(headers: MutableMapping[str, str], span: Span) -> None:
    """Trusted service-to-service propagation (global propagators)."""
    propagate.inject(headers, context=set_span_in_context(span))


def extract_headers(headers: Mapping[str, str]) -> Context:
    return propagate.extract(headers, context=Context())


def remote_span_context(ctx: Context) -> SpanContext | None:
    """The parent span context a carrier delivered, if it was valid."""
    span_context = get_current_span(ctx).get_span_context()
    return span_context if span_context.is_valid else None
