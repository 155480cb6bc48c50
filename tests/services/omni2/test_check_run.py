"""One check run, one span: how a failed check and a refusal between checks are recorded."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from otel.names import Attr, Event, Flow, SpanName
from services.common.protocol import CloseCode, Refusal
from services.omni2.checks import CheckRun


def _checks_span(spans: InMemorySpanExporter) -> ReadableSpan:
    (checks,) = spans.get_finished_spans()
    assert checks.name == SpanName.CHECKS
    return checks


def test_a_check_that_fails_is_recorded_on_the_one_span(spans: InMemorySpanExporter) -> None:
    run = CheckRun({Attr.USER_ID: "carol"})
    with pytest.raises(OSError), run.traced():
        with run.check("user") as noted:
            noted[Attr.USER_ROLE] = "user"
        with run.check("connections"):
            raise OSError("database down: password=hunter2")

    checks = _checks_span(spans)
    span_id = f"{checks.context.span_id:016x}"
    # As traced_step records a failure: the class name, a fixed reason, not the error's text.
    assert checks.status.status_code is StatusCode.ERROR
    assert checks.status.description == "check failed"
    assert dict(checks.attributes or {}) == {
        Attr.USER_ID: "carol",
        Attr.CHECK_NAME: "connections",
        Attr.ERROR_TYPE: "OSError",
    }
    user, connections = checks.events
    assert user.name == Event.check("user")
    assert dict(user.attributes or {}) == {
        Attr.CHECK_NAME: "user",
        Attr.USER_ROLE: "user",
        Attr.CHECK_RESULT: "pass",
        Attr.CHECK_DURATION: run.flow[0].duration_ms,
    }
    assert connections.name == Event.check("connections")
    assert dict(connections.attributes or {}) == {
        Attr.CHECK_NAME: "connections",
        Attr.CHECK_DURATION: run.flow[1].duration_ms,
        Attr.ERROR_TYPE: "OSError",
    }
    assert [(r.kind, r.name, r.status, r.detail, r.span_id) for r in run.flow] == [
        (Flow.CHECK, "user", "ok", {}, span_id),
        (Flow.CHECK, "connections", "error", {"error_type": "OSError"}, span_id),
    ]


def test_a_refusal_between_checks_is_the_callers(spans: InMemorySpanExporter) -> None:
    """The checks that ran passed: the run says so, and the caller records its own refusal
    (at connect, a token revoked since it was issued)."""
    run = CheckRun({})
    with pytest.raises(Refusal), run.traced():
        with run.check("user"):
            pass
        raise Refusal(CloseCode.UNAUTHENTICATED, "token revoked", "token_revoked")

    checks = _checks_span(spans)
    assert checks.status.status_code is StatusCode.UNSET
    assert dict(checks.attributes or {}) == {Attr.CHECK_RESULT: "pass"}
    assert [e.name for e in checks.events] == [Event.check("user")]
    assert [(r.name, r.status) for r in run.flow] == [("user", "ok")]


def test_a_check_needs_its_run_span() -> None:
    with pytest.raises(RuntimeError, match=r"outside CheckRun\.traced"), CheckRun({}).check("user"):
        pass
