from __future__ import annotations

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as sdk_encode
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
    set_span_in_context,
)

from otel.otlp import OtlpSpanExporter, encode_spans
from tests.otel.conftest import Collector


def _spans() -> list[ReadableSpan]:
    """Spans of every shape the encoder handles: kinds, value types, events, links, status,
    remote and local parents, trace state, two resources and two scopes."""
    exported = InMemorySpanExporter()
    remote = SpanContext(
        0x0AF7651916CD43DD8448EB211C80319C,
        0xB7AD6B7169203331,
        is_remote=True,
        trace_flags=TraceFlags(1),
        trace_state=TraceState([("vendor", "v1"), ("other", "x")]),
    )
    for service in ("omni2", "dashboard-backend"):
        provider = TracerProvider(
            resource=Resource.create({"service.name": service, "host.cores": 2})
        )
        provider.add_span_processor(SimpleSpanProcessor(exported))
        for scope in ("first", "second"):
            tracer = provider.get_tracer(scope, "1.2.3", schema_url="https://example/schema")
            with tracer.start_as_current_span(
                "chat.turn",
                context=set_span_in_context(NonRecordingSpan(remote)),
                kind=SpanKind.SERVER,
                links=[Link(remote, {"link.role": "gateway"}), Link(remote)],
                attributes={
                    "text": "héllo ✓",
                    "empty": "",
                    "yes": True,
                    "no": False,
                    "count": 7,
                    "big": 2**62,
                    "negative": -3,
                    "ratio": 0.25,
                    "names": ["a", "b"],
                    "numbers": [1, 2, 3],
                    "flags": [True, False],
                    "floats": [0.5],
                },
            ) as turn:
                turn.add_event("first_token", {"at": 1})
                turn.add_event("bare")
                for kind in SpanKind:
                    with tracer.start_as_current_span(f"step {kind.name}", kind=kind) as step:
                        step.set_status(Status(StatusCode.ERROR, "it failed: détail"))
                with tracer.start_as_current_span("ok") as ok:
                    ok.set_status(Status(StatusCode.OK))
            tracer.start_span("root, no parent").end()
    return list(exported.get_finished_spans())


def test_encoding_decodes_to_exactly_the_sdk_request() -> None:
    spans = _spans()
    ours = ExportTraceServiceRequest.FromString(encode_spans(spans))
    assert ours == sdk_encode(spans)
    assert len(ours.resource_spans) == 2
    assert sum(len(s.spans) for r in ours.resource_spans for s in r.scope_spans) == len(spans)


def test_an_empty_batch_is_an_empty_request() -> None:
    assert encode_spans([]) == b""
    assert ExportTraceServiceRequest.FromString(b"") == sdk_encode([])


def test_the_exporter_posts_the_encoded_request(collector: str) -> None:
    spans = _spans()
    exporter = OtlpSpanExporter(endpoint=collector)
    assert exporter.export(spans) is SpanExportResult.SUCCESS
    ((path, body),) = Collector.bodies
    assert path == "/v1/traces"
    assert ExportTraceServiceRequest.FromString(body) == sdk_encode(spans)
    exporter.shutdown()
    assert exporter.export(spans) is SpanExportResult.FAILURE  # after shutdown: refused


def test_a_span_that_cannot_be_encoded_fails_its_batch_only(collector: str) -> None:
    spans = _spans()
    broken = spans[0]
    broken._attributes = {"bad": object()}  # type: ignore[assignment]  # bypasses the SDK's checks
    exporter = OtlpSpanExporter(endpoint=collector)
    assert exporter.export([broken]) is SpanExportResult.FAILURE
    assert exporter.export(spans[1:]) is SpanExportResult.SUCCESS
    assert len(Collector.bodies) == 1


# The internal OTLP path's credential reaches every exporter of a service as the standard
# variable, which the runner sets (percent-encoded, as the specification has it).
CREDENTIAL = "Basic b21uaS10cmFjZTpzM2NyM3Q+Lz0="  # base64 with + / = in it


@pytest.mark.parametrize(
    "variable", ["OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_TRACES_HEADERS"]
)
def test_our_span_exporter_sends_the_otlp_headers_variable(
    collector: str, monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    monkeypatch.setenv(variable, "Authorization=" + CREDENTIAL.replace(" ", "%20"))
    exporter = OtlpSpanExporter(endpoint=collector)
    assert exporter.export(_spans()) is SpanExportResult.SUCCESS
    assert Collector.authorization == [CREDENTIAL]


def test_the_providers_of_a_service_send_it_for_spans_and_metrics(
    collector: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from opentelemetry.sdk.metrics import MeterProvider

    from otel.metrics import create_meter_provider
    from otel.setup import create_tracer_provider

    monkeypatch.setenv(
        "OTEL_EXPORTER_OTLP_HEADERS", "Authorization=" + CREDENTIAL.replace(" ", "%20")
    )
    base = collector.removesuffix("/v1/traces")
    provider = create_tracer_provider("omni2", otlp_endpoint=base)
    provider.get_tracer("test").start_span("a span").end()
    provider.force_flush()
    provider.shutdown()
    meters: MeterProvider = create_meter_provider(Resource.create({}), otlp_endpoint=base)
    meters.get_meter("test").create_counter("a.counter").add(1)
    meters.force_flush()
    meters.shutdown()
    assert {path for path, _ in Collector.bodies} == {"/v1/traces", "/v1/metrics"}
    assert set(Collector.authorization) == {CREDENTIAL}


def test_an_attribute_encoded_once_is_not_reused_for_an_equal_value_of_another_type() -> None:
    # True == 1 == 1.0 in Python; their encodings differ.
    exported = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exported))
    for value in (True, 1, 1.0, "1", 1, True):
        provider.get_tracer("t").start_span("s", attributes={"x": value}).end()
    spans = exported.get_finished_spans()
    assert ExportTraceServiceRequest.FromString(encode_spans(spans)) == sdk_encode(spans)


JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1MSJ9.c2lnbmF0dXJl"


def _secret_spans() -> list[ReadableSpan]:
    """Secrets in every place a span holds text: name, attributes (a URL, free text, a list),
    event names and attributes, link attributes, the status, and the resource."""
    exported = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"deploy.note": f"Bearer {JWT}"}))
    provider.add_span_processor(SimpleSpanProcessor(exported))
    remote = SpanContext(1, 2, is_remote=True, trace_flags=TraceFlags(1))
    tracer = provider.get_tracer("t")
    for _ in range(2):  # the second time, each attribute comes from the encoder's cache
        with tracer.start_as_current_span(
            f"GET /ws?token={JWT}",
            links=[Link(remote, {"note": f"password={JWT}"})],
            attributes={
                "url.full": f"https://u:{JWT}@host/ws?access_token={JWT}&x=1",
                "note": f'{{"password": "{JWT}"}}',
                "lines": [f"Authorization: Bearer {JWT}", "clean"],
            },
        ) as span:
            span.add_event(f"sent {JWT}", {"detail": f"api_key={JWT}"})
            span.set_status(Status(StatusCode.ERROR, f"refused token={JWT}"))
    return list(exported.get_finished_spans())


def test_the_encoder_masks_secrets_as_redact_span_does() -> None:
    from otel.redaction import redact_span

    spans = _secret_spans()
    encoded = encode_spans(spans)
    assert JWT.encode() not in encoded
    assert b"REDACTED" in encoded
    ours = ExportTraceServiceRequest.FromString(encoded)
    assert ours == sdk_encode([redact_span(span) for span in spans])
