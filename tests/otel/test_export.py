from __future__ import annotations

import logging

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as sdk_encode
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

from otel.export import EncodingSpanProcessor
from otel.otlp import EncodedSpan, OtlpSpanExporter
from tests.otel.conftest import Collector

SECRET = "s3cr3t-t0ken-value"


def _provider(collector: str, **kwargs: object) -> tuple[TracerProvider, InMemorySpanExporter]:
    """Spans both to the processor under test and, as the SDK ended them, to memory."""
    provider = TracerProvider(**kwargs)  # type: ignore[arg-type]
    ended = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(ended))
    provider.add_span_processor(
        EncodingSpanProcessor(OtlpSpanExporter(endpoint=collector), schedule_delay_millis=60_000)
    )
    return provider, ended


def _received() -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    for _, body in Collector.bodies:
        request.MergeFromString(body)
    return request


def test_the_request_is_the_sdk_request_of_the_spans_that_ended(collector: str) -> None:
    provider, ended = _provider(collector)
    tracer = provider.get_tracer("chat", "1.0")
    with tracer.start_as_current_span("chat.turn", attributes={"n": 1, "ok": True}) as turn:
        turn.add_event("first token")
        with tracer.start_as_current_span("chat offline"):
            pass
    provider.force_flush()
    assert len(Collector.bodies) == 1
    assert _received() == sdk_encode(ended.get_finished_spans())


def test_spans_are_redacted_before_they_are_encoded(collector: str) -> None:
    provider, _ = _provider(collector)
    tracer = provider.get_tracer("chat")
    with tracer.start_as_current_span(f"GET /ws?token={SECRET}") as span:
        span.set_attribute("url.full", f"http://dashboard/ws?token={SECRET}")
        span.add_event("sent", {"detail": f'{{"password": "{SECRET}"}}'})
    provider.force_flush()
    ((_, body),) = Collector.bodies
    assert SECRET.encode() not in body
    (sent,) = [s for r in _received().resource_spans for ss in r.scope_spans for s in ss.spans]
    assert "token=" in sent.name


def test_the_queue_holds_bytes_not_spans(collector: str) -> None:
    provider = TracerProvider()
    processor = EncodingSpanProcessor(
        OtlpSpanExporter(endpoint=collector), schedule_delay_millis=60_000
    )
    provider.add_span_processor(processor)
    provider.get_tracer("chat").start_span("a span").end()
    queued = list(processor._batch_processor._queue)  # the SDK's queue, before the batch
    assert [type(item) for item in queued] == [EncodedSpan]
    provider.shutdown()
    assert len(Collector.bodies) == 1  # shutdown sends what was queued


def test_unsampled_spans_are_not_encoded_or_sent(collector: str) -> None:
    provider, ended = _provider(collector, sampler=ALWAYS_OFF)
    provider.get_tracer("chat").start_span("dropped").end()
    provider.force_flush()
    assert ended.get_finished_spans() == ()
    assert Collector.bodies == []


def test_a_span_that_cannot_be_encoded_is_lost_alone(
    collector: str, caplog: pytest.LogCaptureFixture
) -> None:
    provider, _ = _provider(collector)
    tracer = provider.get_tracer("chat")
    broken = tracer.start_span("broken")
    broken._attributes._dict["bad"] = object()  # type: ignore[union-attr]  # past the SDK's checks
    with caplog.at_level(logging.ERROR, logger="otel.export"):
        broken.end()
    tracer.start_span("fine").end()
    provider.force_flush()
    names = [s.name for r in _received().resource_spans for ss in r.scope_spans for s in ss.spans]
    assert names == ["fine"]
    assert "Failed to encode span 'broken'" in caplog.text
