"""Where a traced message's CPU goes: the message measured is shaped like OMNI2's."""

from __future__ import annotations

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from omni_trace.bench import span_costs
from otel.names import SpanName


def test_the_span_cost_message_is_shaped_like_omni2s() -> None:
    exported = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exported))
    span_costs.message(provider.get_tracer("test"), 1)
    spans = {s.name: s for s in exported.get_finished_spans()}
    assert len(spans) == span_costs.SPANS_PER_MESSAGE
    turn = spans[SpanName.TURN]
    assert {SpanName.CHECKS, SpanName.PERSIST} < set(spans)
    assert all(
        s.parent and s.parent.span_id == turn.context.span_id
        for s in spans.values()
        if s is not turn
    )
    assert len(spans[SpanName.CHECKS].events) == 3
