"""Assertions on traces that print the trace tree when they fail."""

from __future__ import annotations

from collections.abc import Callable

from omni_trace.traces.jaeger import TraceSpan
from omni_trace.traces.tracetree import render_tree


def expect(condition: bool, message: str, *traces: list[TraceSpan]) -> None:
    if not condition:
        trees = "\n\n".join(render_tree(t) for t in traces)
        raise AssertionError(f"{message}\n\n{trees}")


def one(spans: list[TraceSpan], service: str, name: str) -> TraceSpan:
    found = [s for s in spans if s.service == service and s.name == name]
    expect(len(found) == 1, f"expected one {service} span {name!r}, found {len(found)}", spans)
    return found[0]


def ancestors(spans: list[TraceSpan], span: TraceSpan) -> list[TraceSpan]:
    """Parents of `span`, nearest first, as far as the trace holds them."""
    by_id = {s.span_id: s for s in spans}
    chain = []
    while span.parent_span_id in by_id:
        span = by_id[span.parent_span_id]
        chain.append(span)
    return chain


def chain_names(spans: list[TraceSpan], span: TraceSpan) -> list[tuple[str, str]]:
    return [(s.service, s.name) for s in ancestors(spans, span)]


def link_targets(span: TraceSpan) -> list[tuple[str, str, object]]:
    """(trace id, span id, chat.link.role) of each of a span's links."""
    return [(lk.trace_id, lk.span_id, lk.attributes.get("chat.link.role")) for lk in span.links]


def has(*wanted: tuple[str, str]) -> Callable[[list[TraceSpan]], bool]:
    """Condition: the trace holds a span of each (service, name); a span reaches Jaeger only
    when it ends, and each service exports in its own batches, so wait for what you assert."""
    return lambda spans: set(wanted) <= {(s.service, s.name) for s in spans}
