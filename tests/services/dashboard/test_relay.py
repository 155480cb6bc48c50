"""The proxy's message tracing: one chat.relay per message frame, ended by done/error."""

from __future__ import annotations

import json

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel.names import Attr, ClientContext, Event, LinkRole, SpanName
from otel.propagation import extract_frame, remote_span_context
from services.dashboard.relay import MessageRefused
from tests.services.dashboard.relaying import CLIENT_SPAN, CLIENT_TRACE, UPSTREAM, Relay


def relay_of(keep: bool = True, link: bool = False, max_pending: int = 16) -> Relay:
    return Relay(keep, link, max_pending)


def message(text: str = "hi", traced: bool = True, flags: str = "01") -> str:
    frame: dict[str, object] = {"type": "message", "text": text}
    if traced:
        frame["trace"] = {
            "traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-{flags}",
            "tracestate": "vendor=client-chosen",
        }
    return json.dumps(frame)


def test_message_frame_gets_relay_span_and_rewritten_context(spans: InMemorySpanExporter) -> None:
    relay = relay_of()
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
    relay = relay_of()
    forwarded = json.loads(relay.to_upstream(message(traced=False)))
    parent = remote_span_context(extract_frame(forwarded))
    assert parent is not None
    relay.from_upstream(json.dumps({"type": "done", "trace_id": f"{parent.trace_id:032x}"}))
    (span,) = spans.get_finished_spans()
    assert span.parent is None


def test_other_frames_pass_unchanged(spans: InMemorySpanExporter) -> None:
    relay = relay_of()
    for text in ("not json", "[1]", '{"type": "ping"}'):
        assert relay.to_upstream(text) == text
    relay.from_upstream(json.dumps({"type": "error", "trace_id": "f" * 32}))
    assert spans.get_finished_spans() == ()


def test_error_frame_marks_span_and_unanswered_spans_end_on_close(
    spans: InMemorySpanExporter,
) -> None:
    relay = relay_of()
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
    relay = relay_of()
    relay.to_upstream(message())
    relay.from_upstream(
        json.dumps({"type": "blocked", "error": "user blocked: spam", "trace_id": CLIENT_TRACE})
    )
    (span,) = spans.get_finished_spans()
    assert span.status.status_code.name == "ERROR"
    assert span.status.description == "user blocked: spam"
    assert span.attributes is not None and span.attributes[Attr.FRAME_TYPE] == "blocked"


def test_a_client_cannot_switch_tracing_off(spans: InMemorySpanExporter) -> None:
    relay = relay_of()
    forwarded = json.loads(relay.to_upstream(message(flags="00")))
    relay.from_upstream(json.dumps({"type": "done", "trace_id": CLIENT_TRACE}))
    (span,) = spans.get_finished_spans()
    assert f"{span.context.trace_id:032x}" == CLIENT_TRACE  # still continued
    assert span.context.trace_flags.sampled
    assert forwarded["trace"]["traceparent"].endswith("-01")
    assert "tracestate" not in forwarded["trace"]  # the client's vendor state stops here


def test_a_dropped_connection_records_nothing_and_tells_the_next_hop(
    spans: InMemorySpanExporter,
) -> None:
    relay = relay_of(keep=False)
    forwarded = json.loads(relay.to_upstream(message()))
    relay.from_upstream(json.dumps({"type": "done", "trace_id": CLIENT_TRACE}))
    assert spans.get_finished_spans() == ()
    assert forwarded["trace"]["traceparent"].endswith("-00")


def test_link_mode_starts_its_own_trace_and_links_the_client(
    spans: InMemorySpanExporter,
) -> None:
    relay = relay_of(link=True)
    forwarded = json.loads(relay.to_upstream(message()))
    parent = remote_span_context(extract_frame(forwarded))
    assert parent is not None
    relay.from_upstream(json.dumps({"type": "done", "trace_id": f"{parent.trace_id:032x}"}))
    (span,) = spans.get_finished_spans()
    assert span.parent is None
    assert f"{span.context.trace_id:032x}" != CLIENT_TRACE
    client = [link for link in span.links if link.attributes[Attr.LINK_ROLE] == LinkRole.CLIENT]
    assert [f"{link.context.span_id:016x}" for link in client] == [CLIENT_SPAN]


def test_unanswered_messages_are_bounded(spans: InMemorySpanExporter) -> None:
    relay = relay_of(max_pending=2)
    relay.to_upstream(message(traced=False))
    relay.to_upstream(message(traced=False))
    with pytest.raises(MessageRefused) as refused:
        relay.to_upstream(message(traced=False))
    assert refused.value.frame["code"] == "too_many_pending"
    assert refused.value.frame["trace_id"] == refused.value.trace_id
    (span,) = spans.get_finished_spans()
    assert span.attributes is not None and span.attributes[Attr.ERROR_TYPE] == "too_many_pending"


def test_deeply_nested_frames_pass_through_untraced(spans: InMemorySpanExporter) -> None:
    nested = "[" * 100_000
    assert relay_of().to_upstream(nested) == nested
    relay_of().from_upstream(nested)
    assert spans.get_finished_spans() == ()


def test_a_relayed_frame_grows_only_by_its_trace_context(spans: InMemorySpanExporter) -> None:
    text = json.dumps({"type": "message", "text": "é" * 20_000}, ensure_ascii=False)
    forwarded = relay_of().to_upstream(text)
    assert len(forwarded.encode()) - len(text.encode()) < 200


@pytest.mark.parametrize(
    ("frame", "recorded"),
    [
        (message(traced=False), {Attr.CLIENT_CONTEXT: ClientContext.NONE}),
        (
            message(flags="00"),
            {Attr.CLIENT_CONTEXT: ClientContext.CONTINUED, Attr.CLIENT_SAMPLED: False},
        ),
        (
            json.dumps({"type": "message", "text": "x", "trace": {"traceparent": "00-zz"}}),
            {Attr.CLIENT_CONTEXT: ClientContext.MALFORMED},
        ),
    ],
)
def test_the_relay_records_what_the_client_sent(
    spans: InMemorySpanExporter, frame: str, recorded: dict[str, object]
) -> None:
    relay = relay_of()
    relay.to_upstream(frame)
    relay.close("test over")
    (span,) = spans.get_finished_spans()
    assert span.attributes is not None
    assert {k: v for k, v in span.attributes.items() if k.startswith("chat.client.")} == recorded


def test_a_second_message_naming_the_first_ones_trace_starts_its_own(
    spans: InMemorySpanExporter,
) -> None:
    relay = relay_of()
    relay.to_upstream(message())
    relay.to_upstream(message())  # the same traceparent again
    relay.close("test over")
    first, second = sorted(spans.get_finished_spans(), key=lambda s: s.start_time or 0)
    assert f"{first.context.trace_id:032x}" == CLIENT_TRACE
    assert f"{second.context.trace_id:032x}" != CLIENT_TRACE and second.parent is None
    assert second.attributes is not None
    assert second.attributes[Attr.CLIENT_CONTEXT] == ClientContext.REUSED


def test_a_frame_the_dashboard_writes_itself_ends_no_relayed_message(
    spans: InMemorySpanExporter,
) -> None:
    relay = relay_of()
    relay.to_upstream(message())
    # A refusal of its own (a frame over the rate), which names no trace.
    relay.from_upstream(json.dumps({"type": "error", "error": "too many frames", "trace_id": None}))
    assert spans.get_finished_spans() == ()
    relay.from_upstream(json.dumps({"type": "done", "trace_id": CLIENT_TRACE}))
    (span,) = spans.get_finished_spans()
    assert span.attributes is not None and span.attributes[Attr.FRAME_TYPE] == "done"


def test_the_relay_stall_knob_holds_one_token_frame_per_message_and_is_off_by_default() -> None:
    import asyncio
    import time

    from services.dashboard.relay import RelayStall
    from services.dashboard.settings import DashboardSettings

    assert DashboardSettings(OMNI_JWT_SECRET="s" * 32).relay_stall_ms == 0  # type: ignore[call-arg]
    token, done = '{"type": "token", "text": "a"}', '{"type": "done", "result": {}}'
    stall = RelayStall(80, after=2)

    async def held(frames: list[str]) -> list[bool]:
        out = []
        for frame in frames:
            start = time.perf_counter()
            await stall.before_forwarding(frame)
            out.append(time.perf_counter() - start >= 0.08)
        return out

    # The third token frame of each message waits, nothing else does.
    frames = [token, token, token, token, done, token, token, token, done]
    waited = asyncio.run(held(frames))
    assert [i for i, w in enumerate(waited) if w] == [2, 7], waited


def test_the_relay_stall_counts_a_token_frame_the_fast_path_misses() -> None:
    """The stall knows token frames from the frame codec: one written with its kind last
    (parsed, not matched by its first bytes) still counts, and `done` still ends a message."""
    import asyncio
    import time

    from services.dashboard.relay import RelayStall

    token, done = '{"text": "a", "type": "token"}', '{"result": {}, "type": "done"}'
    stall = RelayStall(80, after=1)

    async def held(frames: list[str]) -> list[int]:
        out = []
        for i, frame in enumerate(frames):
            start = time.perf_counter()
            await stall.before_forwarding(frame)
            if time.perf_counter() - start >= 0.08:
                out.append(i)
        return out

    assert asyncio.run(held([token, token, token, done, token, token])) == [1, 5]
