"""Where a traced message's CPU goes: the message measured is shaped like OMNI2's, and so are
the metrics it records."""

from __future__ import annotations

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import AggregationTemporality, HistogramDataPoint
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from omni_trace.bench import span_costs
from otel.histograms import LocalHistograms
from otel.metrics import ChatMetrics
from otel.names import Metric, SpanName


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


def test_the_metrics_message_records_what_omni2_records_per_answer() -> None:
    local = LocalHistograms("test")
    chat = ChatMetrics.create(MeterProvider().get_meter("test"), local)
    span_costs.metrics_message(chat)
    counts = {
        m.name: sum(p.count for p in m.data.data_points if isinstance(p, HistogramDataPoint))
        for m in local.collect(AggregationTemporality.CUMULATIVE)
    }
    assert counts[Metric.TIME_PER_OUTPUT_CHUNK] == span_costs.CHUNKS - 1
    assert counts[Metric.TIME_TO_FIRST_CHUNK] == counts[Metric.OPERATION_DURATION] == 1
    assert counts[Metric.TOKEN_USAGE] == 2  # input and output
    assert counts[Metric.SERVER_TIME_PER_OUTPUT_TOKEN] == 1
