"""One step of a connection or message: a span and the flow event that records it.

Checks, model calls, tool calls and OMNI2's own closes all keep the same books: a span, a
flow event naming that span, its duration, and on failure the same error type and reason on
both. `traced_step` keeps them once, so the span and the audit trail cannot disagree.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode, format_span_id

from otel.names import Attr
from otel.redaction import redact_text
from services.db.repository.flow import FlowRecord

tracer = trace.get_tracer(__name__)


@dataclass
class Step:
    span: Span
    record: FlowRecord
    started: float = field(default_factory=time.perf_counter)
    failed: bool = False

    def stop_clock(self) -> None:
        """Fix the flow event's duration now, e.g. to store it before the span ends."""
        if self.record.duration_ms is None:
            self.record.duration_ms = (time.perf_counter() - self.started) * 1000

    def fail(
        self, error_type: str, status_text: str, *, status: str = "error", **detail: Any
    ) -> None:
        """Mark the step failed (status "error") or refused (status "denied") on both books.

        `status_text` goes on the span's status, redacted: it may hold text from outside (a
        provider's error message). `detail` goes into the flow event beside the error type."""
        self.span.set_attribute(Attr.ERROR_TYPE, error_type)
        self.span.set_status(Status(StatusCode.ERROR, redact_text(status_text)))
        self.record.status = status
        self.record.detail |= {"error_type": error_type, **detail}
        self.failed = True


@contextmanager
def traced_step(
    flow: list[FlowRecord],
    kind: str,
    name: str,
    span_name: str,
    *,
    span_kind: SpanKind = SpanKind.INTERNAL,
    attributes: Mapping[str, Any] | None = None,
    detail: dict[str, Any] | None = None,
    context: Context | None = None,
    links: Sequence[Link] = (),
    failure: str = "failed",
    not_failures: tuple[type[BaseException], ...] = (),
) -> Iterator[Step]:
    """A span `span_name` and a flow event (`kind`, `name`) appended to `flow` at the start.

    An exception that the body did not record with `Step.fail` is recorded as an error of
    its class name with the fixed reason `failure` (its text may not be fit for the audit
    trail), unless it is one of `not_failures` (e.g. the client leaving, recorded above)."""
    with tracer.start_as_current_span(
        span_name,
        context=context,
        kind=span_kind,
        attributes=attributes,
        links=links,
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        step = Step(
            span,
            FlowRecord(
                kind,
                name,
                "ok",
                span_id=format_span_id(span.get_span_context().span_id),
                detail=dict(detail or {}),
            ),
        )
        flow.append(step.record)
        with failures_recorded(step, failure, not_failures):
            yield step


@contextmanager
def failures_recorded(
    step: Step, failure: str, not_failures: tuple[type[BaseException], ...] = ()
) -> Iterator[Step]:
    """`traced_step`'s rule for a step whose span is already open (or shared, as the checks'
    span is): an exception the body did not record with `Step.fail` is an error of its class
    name with the fixed reason `failure`, unless it is one of `not_failures`; the clock stops
    when the body ends, whichever way."""
    try:
        yield step
    except BaseException as err:
        if not step.failed and not isinstance(err, not_failures):
            step.fail(type(err).__name__, failure)
        raise
    finally:
        step.stop_clock()
