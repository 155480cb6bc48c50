"""The proxy's message tracing: one chat.relay per message frame, ended by done/error."""

from __future__ import annotations

import json

from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanContext, TraceFlags

from otel.names import Attr, Event, LinkRole, SpanName
from otel.propagation import extract_frame, remote_span_context
from services.dashboard.relay import MessageRelay

CLIENT_TRACE = "0af7651916cd43dd8448eb211c80319c"
CLIENT_SPAN = "b7ad6b7169203331"
UPSTREAM = SpanContext(0x1234, 0x5678, is_remote=False, trace_flags=TraceFlags(1))


def message(text: str = "hi", traced: bool = True) -> str:
    frame: dict[str, object] = {"type": "message", "text": text}
    if traced:
        frame["trace"] = {"traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"}
    return json.dumps(frame)


def test_message_frame_gets_relay_span_and_rewritten_context(spans: InMemorySpanExporter) -> None:
    relay = MessageRelay(UPSTREAM)
    relay.from_upstream(json.dumps({"type": "welcome", "conversation_id": "c1", "user_id": "u"}))
    forwarded = json.loads(relay.to_upstream(message()))
    relay.from_upstream('{"type": "token", "text": "a"}')
    relay.from_upstream('{"type": "token", "text": "b"}')
    relay.from_upstream(json.dumps({"type": "done", "trace_id": CLIENT_TRACE, "result": {}}))

    (span,) = spans.get_finished_spans()
    assert span.name == SpanName.RELAY
    assert span.parent is not None and f"{span.parent.span_id:016x}" == CLIENT_SPAN
    assert f"{span.context.trace_id:032x}" == CLIENT_TRACE
    (link,) = span.links
    assert link.context.span_id == UPSTREAM.span_id
    assert link.attributes == {Attr.LINK_ROLE: LinkRole.UPSTREAM_CONNECT}
    assert span.attributes is not None
    assert span.attributes[Attr.CONVERSATION_ID] == "c1"
    assert span.attributes[Attr.TOKEN_FRAMES] == 2
    assert [e.name for e in span.events] == [Event.FIRST_TOKEN]
    # OMNI2 sees the relay span as the parent, in the same trace.
    parent = remote_span_context(extract_frame(forwarded))
    assert parent is not None and parent.span_id == span.context.span_id
    assert forwarded["text"] == "hi"


def test_untraced_message_starts_a_trace_at_the_dashboard(spans: InMemorySpanExporter) -> None:
    relay = MessageRelay(UPSTREAM)
    forwarded = json.loads(relay.to_upstream(message(traced=False)))
    parent = remote_span_context(extract_frame(forwarded))
    assert parent is not None
    relay.from_upstream(json.dumps({"type": "done", "trace_id": f"{parent.trace_id:032x}"}))
    (span,) = spans.get_finished_spans()
    assert span.parent is None


def test_other_frames_pass_unchanged(spans: InMemorySpanExporter) -> None:
    relay = MessageRelay(UPSTREAM)
    for text in ("not json", "[1]", '{"type": "ping"}'):
        assert relay.to_upstream(text) == text
    relay.from_upstream(json.dumps({"type": "error", "trace_id": "f" * 32}))
    assert spans.get_finished_spans() == ()


def test_error_frame_marks_span_and_unanswered_spans_end_on_close(
    spans: InMemorySpanExporter,
) -> None:
    relay = MessageRelay(UPSTREAM)
    relay.to_upstream(message())
    relay.from_upstream(
        json.dumps(
            {"type": "error", "error": "boom", "code": "model_error", "trace_id": CLIENT_TRACE}
        )
    )
    with trace.get_tracer("t").start_as_current_span("other"):
        relay.to_upstream(message("again", traced=False))
    relay.close("gone")
    failed, unanswered = [s for s in spans.get_finished_spans() if s.name == SpanName.RELAY]
    assert failed.status.status_code.name == "ERROR"
    assert failed.attributes is not None and failed.attributes[Attr.ERROR_TYPE] == "model_error"
    assert unanswered.attributes is not None
    assert unanswered.attributes[Attr.ERROR_TYPE] == "no_reply"


def test_blocked_frame_ends_the_relay_span_as_an_error(spans: InMemorySpanExporter) -> None:
    relay = MessageRelay(UPSTREAM)
    relay.to_upstream(message())
    relay.from_upstream(
        json.dumps({"type": "blocked", "error": "user blocked: spam", "trace_id": CLIENT_TRACE})
    )
    (span,) = spans.get_finished_spans()
    assert span.status.status_code.name == "ERROR"
    assert span.status.description == "user blocked: spam"
    assert span.attributes is not None and span.attributes[Attr.FRAME_TYPE] == "blocked"
