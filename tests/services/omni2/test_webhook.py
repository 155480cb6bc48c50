"""The usage webhook: trace context in every configured propagator, never in the chat's way
(a failing or slow webhook is a span error and a log line), bounded calls in flight."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest
from opentelemetry import propagate, trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.propagators.jaeger import JaegerPropagator
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from otel.names import Attr, SpanName
from services.omni2 import webhook as webhook_mod
from services.omni2.webhook import UsageWebhook


@pytest.fixture
def spans(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(webhook_mod, "tracer", provider.get_tracer("test"))
    previous = propagate.get_global_textmap()
    # As OTEL_PROPAGATORS=tracecontext,baggage,jaeger configures it.
    propagate.set_global_textmap(
        CompositePropagator(
            [TraceContextTextMapPropagator(), W3CBaggagePropagator(), JaegerPropagator()]
        )
    )
    yield exporter
    propagate.set_global_textmap(previous)


def _hook(handler: httpx.MockTransport, max_pending: int = 64) -> UsageWebhook:
    client = httpx.AsyncClient(transport=handler)
    return UsageWebhook("http://ledger.internal/usage", max_pending=max_pending, client=client)


async def test_the_call_carries_traceparent_and_uber_trace_id(
    spans: InMemorySpanExporter,
) -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"recorded": True})

    hook = _hook(httpx.MockTransport(answer))
    hook.post(
        {"user_id": "alice", "tokens_used": 12}, trace.set_span_in_context(trace.INVALID_SPAN)
    )
    await hook.aclose()
    (request,) = seen
    (span,) = spans.get_finished_spans()
    assert span.name == SpanName.USAGE_WEBHOOK and span.kind == trace.SpanKind.CLIENT
    trace_id = f"{span.context.trace_id:032x}"
    span_id = f"{span.context.span_id:016x}"
    assert request.headers["traceparent"].startswith(f"00-{trace_id}-{span_id}-")
    assert request.headers["uber-trace-id"].startswith(f"{trace_id}:{span_id}:")
    assert span.attributes is not None
    assert span.attributes[Attr.HTTP_STATUS] == 200


@pytest.mark.parametrize(
    ("answer", "error_type"),
    [
        (lambda r: httpx.Response(503), "503"),
        (lambda r: (_ for _ in ()).throw(httpx.ConnectError("refused", request=r)), "ConnectError"),
    ],
)
async def test_a_failing_webhook_is_a_span_error_not_a_crash(
    spans: InMemorySpanExporter, answer: object, error_type: str
) -> None:
    hook = _hook(httpx.MockTransport(answer))  # type: ignore[arg-type]
    hook.post({"user_id": "alice"}, trace.set_span_in_context(trace.INVALID_SPAN))
    await hook.aclose()
    (span,) = spans.get_finished_spans()
    assert span.status.status_code == trace.StatusCode.ERROR
    assert span.attributes is not None and span.attributes[Attr.ERROR_TYPE] == error_type


async def test_calls_in_flight_are_bounded(spans: InMemorySpanExporter) -> None:
    release = asyncio.Event()

    async def slow(request: httpx.Request) -> httpx.Response:
        await release.wait()
        return httpx.Response(200)

    hook = _hook(httpx.MockTransport(slow), max_pending=2)
    for _ in range(5):
        hook.post({"user_id": "alice"}, trace.set_span_in_context(trace.INVALID_SPAN))
    assert hook.dropped == 3
    release.set()
    await hook.aclose()
    assert len(spans.get_finished_spans()) == 2


def test_without_a_url_nothing_is_sent() -> None:
    hook = UsageWebhook(None)
    hook.post({"user_id": "alice"}, trace.set_span_in_context(trace.INVALID_SPAN))
    assert not hook.configured and hook.dropped == 0
