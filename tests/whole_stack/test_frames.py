"""Malformed frames through the whole stack: an error frame each, and the chat goes on."""

from __future__ import annotations

import json

import pytest
from websockets.asyncio.client import connect

from omni_trace.stack import Stack
from omni_trace.stack.client import login
from omni_trace.stack.plugin import ChatFactory
from omni_trace.traces import TraceFetcher, has_services
from otel.names import Attr, Service, SpanName

pytestmark = pytest.mark.stack

MALFORMED: list[tuple[str | bytes, str]] = [
    ("this is not JSON", "invalid_json"),
    ('["a", "list"]', "invalid_frame"),
    (json.dumps({"type": "shout", "text": "hi"}), "unknown_type"),
    (json.dumps({"type": "message"}), "missing_text"),
    (json.dumps({"type": "message", "text": ""}), "missing_text"),
    (json.dumps({"type": "message", "text": "x", "trace": {"traceparent": "00-zz"}}), ""),
    (b"\x00\x01binary", "binary_frame"),
]


async def test_malformed_frames_get_error_frames_and_connection_stays_usable(
    omni_chat: ChatFactory, omni_traces: TraceFetcher
) -> None:
    async with omni_chat("bob") as chat:
        answers = [await chat.send_raw(frame) for frame, _ in MALFORMED]
        after = await chat.send("still working?")
    for (frame, code), answer in zip(MALFORMED, answers, strict=True):
        if not code:  # bad trace context is not an error: the message is answered
            assert answer["type"] == "done", (frame, answer)
            continue
        assert answer["type"] == "error", (frame, answer)
        assert answer["code"] == code and answer["error"], answer
        assert len(answer["trace_id"]) == 32
    assert after.ok and after.text

    # A message frame without text is still one traced exchange: relayed, refused by OMNI2.
    missing_text = answers[3]
    spans = omni_traces.wait(
        missing_text["trace_id"],
        has_services(Service.DASHBOARD, Service.OMNI2),
        what="the refused frame's relay and turn",
    )
    relay = spans.one(f"{Service.DASHBOARD}:{SpanName.RELAY}")
    turn = spans.one(f"{Service.OMNI2}:{SpanName.TURN}")
    spans.expect(turn.parent_span_id == relay.span_id, "turn < relay")
    spans.expect(
        turn.status == "ERROR" and turn.attributes.get(Attr.ERROR_TYPE) == "missing_text",
        "OMNI2's span records why the frame was refused",
    )
    spans.expect(relay.status == "ERROR", "the relay span ends with the error frame")


async def test_malformed_query_trace_context_starts_a_fresh_trace(stack: Stack) -> None:
    token = await login(stack.info.dashboard_url, "bob", "bob-demo")
    url = f"{stack.info.dashboard_ws_url}?token={token}&traceparent=00-nonsense&tracestate=" + (
        "x" * 5000
    )
    async with connect(url) as ws:
        welcome = json.loads(await ws.recv())
        assert welcome["type"] == "welcome"
        await ws.send(json.dumps({"type": "message", "text": "hi"}))
        while (frame := json.loads(await ws.recv()))["type"] == "token":
            pass
    assert frame["type"] == "done"
