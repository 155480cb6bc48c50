"""Trace-context carriers: the query string, HTTP/WebSocket headers, and the frame `trace` object.

Context from the client side (query string, frames) is untrusted: only W3C `traceparent` and
`tracestate` are read, size-capped, and anything malformed simply starts a fresh trace.
Headers between our own services go through the globally configured propagators
(`OTEL_PROPAGATORS`, so a legacy `uber-trace-id` peer can join with `jaeger`).
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from typing import Any

from opentelemetry import propagate
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanContext, get_current_span, set_span_in_context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
FRAME_TRACE_KEY = "trace"  # frames carry {"trace": {"traceparent": ..., "tracestate": ...}}

_MAX_TRACEPARENT = 55  # 00-<32 hex>-<16 hex>-<2 hex>
_MAX_TRACESTATE = 512  # W3C allows more; we keep correlation, not arbitrary payloads
_W3C = TraceContextTextMapPropagator()


def _untrusted_carrier(source: Mapping[str, Any]) -> dict[str, str]:
    carrier: dict[str, str] = {}
    parent = source.get(TRACEPARENT)
    if isinstance(parent, str) and len(parent) <= _MAX_TRACEPARENT:
        carrier[TRACEPARENT] = parent.strip()
        state = source.get(TRACESTATE)
        if isinstance(state, str) and len(state) <= _MAX_TRACESTATE:
            carrier[TRACESTATE] = state
    return carrier


def extract_untrusted(source: Mapping[str, Any] | None) -> Context:
    """Context from a client-controlled mapping (query params, a frame's `trace` object).

    Baggage and every other key are ignored; an invalid traceparent yields an empty context.
    """
    if not isinstance(source, Mapping):
        return Context()
    return _W3C.extract(_untrusted_carrier(source), context=Context())


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
