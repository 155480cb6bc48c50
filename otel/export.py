"""Spans leave the process: redacted and encoded as each one ends, sent in batches.

The SDK's `BatchSpanProcessor` keeps every ended span until its thread redacts, encodes and
sends a batch of a few hundred. Under load the profile showed that thread holding the GIL for
milliseconds at a stretch while the event loop waited for it, and every queued span (a
`ReadableSpan` with its attribute dicts, events and links) kept alive, and scanned by the
garbage collector, for up to the schedule delay. Here the thread that ends a span encodes it
at once, masking secrets as it writes (`otel.otlp`: the same work, a few microseconds per
span, between two steps of the event loop), and the queue holds only bytes; the batch thread
joins them into one request and sends it. Queue size, batch size and delay are the SDK's
(`OTEL_BSP_*`), and so are the handling of forks, `force_flush` and `shutdown`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from otel.otlp import EncodedSpan, OtlpSpanExporter, encode_request, encode_span

log = logging.getLogger(__name__)


class _RequestSender(SpanExporter):
    """The batch thread's end: one request of already encoded spans."""

    def __init__(self, exporter: OtlpSpanExporter) -> None:
        self.exporter = exporter

    def export(self, spans: Sequence[EncodedSpan]) -> SpanExportResult:  # type: ignore[override]
        return self.exporter.send(encode_request(spans))

    def shutdown(self) -> None:
        self.exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.exporter.force_flush(timeout_millis)


class EncodingSpanProcessor(BatchSpanProcessor):
    """Encodes (and so redacts) each sampled span when it ends; sends them in batches."""

    def __init__(
        self, exporter: OtlpSpanExporter, *, schedule_delay_millis: float | None = None
    ) -> None:
        super().__init__(_RequestSender(exporter), schedule_delay_millis=schedule_delay_millis)

    def on_end(self, span: ReadableSpan) -> None:
        if not (span.context and span.context.trace_flags.sampled):
            return
        try:
            encoded = encode_span(span)
        except Exception as err:  # a span we cannot encode is lost alone, never the process
            log.error("Failed to encode span %r: %s", span.name, err)
            return
        self._batch_processor.emit(encoded)  # type: ignore[arg-type]
