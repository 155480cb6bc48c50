"""Where a traced message's microseconds go, in this process: the span API, the SDK's spans,
their processor and queue, and encoding (which masks secrets as it writes), for spans shaped
like OMNI2's per message; and OMNI2's metrics for one streamed answer, recorded through the
SDK's histograms and through the in-process ones it uses (otel/histograms.py), side by side.

The stack's CPU per turn says what tracing costs in all; this says what each stage of a span's
way out costs, measured on the same machine in the same run (CPU time, the best of several
repetitions, garbage collected before each). Sending the encoded request is not included: its
cost depends on the collector's answer, and the stack's figures hold it.
"""

from __future__ import annotations

import gc
import io
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter, MeterProvider
from opentelemetry.sdk.metrics.export import ConsoleMetricExporter, InMemoryMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.trace import NoOpTracerProvider, SpanKind, Tracer
from opentelemetry.trace import TracerProvider as ApiTracerProvider
from opentelemetry.util.types import AttributeValue

from otel.histograms import LocalHistograms, LocalMetricReader
from otel.metrics import ChatMetrics
from otel.names import Attr, Event, SpanName
from otel.otlp import encode_span
from otel.processors import InheritAttributesProcessor
from otel.sampling import ServerDecisionSampler, with_decision

MESSAGES = 1000
REPEATS = 5
_IDS: dict[str, AttributeValue] = {
    Attr.CONVERSATION_ID: "3f2b8c1e-6a47-4b0e-9d51-2c7e8a9f0b13",
    Attr.USER_ID: "user-0042",
}


def message(tracer: Tracer, number: int) -> None:
    """The spans OMNI2 makes for a tool-free message: the turn, its checks (one span, an event
    each), the model call with its first-token event, and persistence."""
    context = with_decision(None, True)
    conversation: dict[str, AttributeValue] = {**_IDS, Attr.MESSAGE_CHARS: 20 + number % 50}
    with tracer.start_as_current_span(
        SpanName.TURN, context=context, kind=SpanKind.SERVER, attributes=conversation
    ) as turn:
        with tracer.start_as_current_span(SpanName.CHECKS, attributes=conversation) as checks:
            for name in ("user", "rate_limit", "usage"):
                checks.add_event(
                    Event.check(name),
                    {Attr.CHECK_NAME: name, Attr.CHECK_RESULT: "pass", Attr.LIMIT_USED: number},
                )
            checks.set_attribute(Attr.CHECK_RESULT, "pass")
        with tracer.start_as_current_span(
            "chat offline", kind=SpanKind.CLIENT, attributes=conversation
        ) as model:
            model.add_event(Event.FIRST_TOKEN)
            model.set_attributes(
                {Attr.GEN_AI_INPUT_TOKENS: 12, Attr.GEN_AI_OUTPUT_TOKENS: 25 + number % 7}
            )
        with tracer.start_as_current_span(SpanName.PERSIST, attributes=conversation) as persist:
            persist.set_attribute(Attr.FLOW_EVENTS, 4)
        turn.set_attribute(Attr.TOKEN_FRAMES, 25)


SPANS_PER_MESSAGE = 4
# The offline model's answer to the bench's message: chunks of text, each a metric record
# (gen_ai.client.operation.time_per_output_chunk is one per chunk after the first).
CHUNKS = 22
_SERVED = {Attr.GEN_AI_OPERATION: "chat", Attr.GEN_AI_PROVIDER: "offline"}


def metrics_message(chat: ChatMetrics) -> None:
    """What OMNI2 records for one answered, tool-free message."""
    call = chat.model_call("offline", "omni2-offline-1")
    for _ in range(CHUNKS):
        call.chunk()
    call.finished(response_model="omni2-offline-1", input_tokens=26, output_tokens=23, user_id="u1")
    chat.served(_SERVED, seconds=0.3, first_token_s=0.02, output_tokens=23)
    chat.first_token(0.02, server_of_stream=True)
    chat.usage_cost(model="omni2-offline-1", user_id="u1", cost=0.001)


class _Keep(SpanExporter):
    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.spans.extend(spans)
        return SpanExportResult.SUCCESS


class _Drop(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def _best_us(run: Callable[[], object], per: int) -> float:
    """The best of REPEATS runs, in CPU microseconds per `per` items."""
    best = float("inf")
    for _ in range(REPEATS):
        gc.collect()
        started = time.process_time()
        run()
        best = min(best, time.process_time() - started)
    return best * 1e6 / per


def _messages_us(make: Callable[[], ApiTracerProvider]) -> float:
    def run() -> None:
        provider = make()
        tracer = provider.get_tracer("span-costs")
        for number in range(MESSAGES):
            message(tracer, number)
        if isinstance(provider, TracerProvider):
            provider.shutdown()

    return _best_us(run, MESSAGES)


def _sdk(*processors: Callable[[], object], sampler: bool = False) -> Callable[[], TracerProvider]:
    def make() -> TracerProvider:
        provider = TracerProvider(sampler=ServerDecisionSampler() if sampler else None)
        for processor in processors:
            provider.add_span_processor(processor())  # type: ignore[arg-type]
        return provider

    return make


@dataclass(frozen=True)
class SpanCosts:
    """CPU microseconds per message of `SPANS_PER_MESSAGE` spans, by stage."""

    api_without_sdk: float
    sdk_spans: float
    sampler_and_processors: float  # ours, and the batch processor's queue
    encoding: float  # with redaction, as the exporter does it
    # OMNI2's metrics for one answer of CHUNKS chunks (not part of `total`: recorded for
    # every message, traced or not).
    metrics_sdk_histograms: float = 0.0
    metrics_local_histograms: float = 0.0

    @property
    def total(self) -> float:
        return self.sdk_spans + self.sampler_and_processors + self.encoding


def measure() -> SpanCosts:
    api = _messages_us(NoOpTracerProvider)
    sdk = _messages_us(_sdk())
    processed = _messages_us(
        _sdk(InheritAttributesProcessor, lambda: BatchSpanProcessor(_Drop()), sampler=True)
    )
    kept = _Keep()
    provider = _sdk(lambda: SimpleSpanProcessor(kept))()
    tracer = provider.get_tracer("span-costs")
    for number in range(MESSAGES):
        message(tracer, number)
    spans = kept.spans
    encoding = _best_us(lambda: [encode_span(s) for s in spans], MESSAGES)
    sdk_metrics, local_metrics = _metrics_us()
    return SpanCosts(api, sdk, processed - sdk, encoding, sdk_metrics, local_metrics)


def _metrics_us() -> tuple[float, float]:
    """CPU microseconds per message of `metrics_message` through the SDK's histograms and
    through the local ones (exported by nothing here), the repetitions taking turns."""
    off = AlwaysOffExemplarFilter()  # as the services run (otel/metrics.py)
    # Neither is collected (no interval, no shutdown at exit): nothing reaches stdout.
    sdk = MeterProvider(
        metric_readers=[InMemoryMetricReader()], exemplar_filter=off, shutdown_on_exit=False
    )
    local = LocalHistograms("span-costs")
    exporter = ConsoleMetricExporter(out=io.StringIO())
    resource = Resource.create({})
    reader = LocalMetricReader(exporter, local, resource, export_interval_millis=math.inf)
    with_local = MeterProvider(metric_readers=[reader], exemplar_filter=off, shutdown_on_exit=False)
    chats = (
        ChatMetrics.create(sdk.get_meter("span-costs")),
        ChatMetrics.create(with_local.get_meter("span-costs"), local),
    )
    best = [math.inf, math.inf]
    for _ in range(REPEATS):
        for i, chat in enumerate(chats):
            gc.collect()
            started = time.process_time()
            for _ in range(MESSAGES):
                metrics_message(chat)
            best[i] = min(best[i], time.process_time() - started)
    return best[0] * 1e6 / MESSAGES, best[1] * 1e6 / MESSAGES
