"""The dashboard's per-connection frame limits, at OMNI2 for a client that reaches it without
the dashboard: every frame costs a token of the connection's rate (refused frames get
`rate_limited`, a flood is closed with 1008 and leaves one `chat.refused` span and one flow
event), and messages awaiting their answer are capped (`too_many_pending`). Frames are read
while a message is being answered: a ping gets its pong at once."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import jwt
import pytest
from fastapi.testclient import TestClient
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from starlette.testclient import WebSocketTestSession
from starlette.websockets import WebSocketDisconnect

from otel.names import Attr, Flow, SpanName
from services.common.protocol import CloseCode
from services.common.provenance import DASHBOARD_KEY_HEADER
from services.common.tokens import issue_token
from services.db.repository import conversations as conversations_repo
from services.db.repository import flow as flow_repo
from services.omni2.model import ChatMessage, ModelEvent, OfflineModel, TextChunk, ToolSpec
from tests.conftest import DASHBOARD_KEY
from tests.db import Admin
from tests.services.omni2.conftest import SECRET, gateway_headers


class HeldModel(OfflineModel):
    """Streams one token, then holds each answer until the test lets them go."""

    def __init__(self) -> None:
        super().__init__()
        self.go = threading.Event()

    async def stream(
        self, messages: Sequence[ChatMessage], tools: Sequence[ToolSpec] = ()
    ) -> AsyncIterator[ModelEvent]:
        yield TextChunk("held ")
        if not await asyncio.to_thread(self.go.wait, 10):
            raise TimeoutError("the test never let the answer go")
        async for event in super().stream(messages, tools):
            yield event


def _traceparent(n: int) -> tuple[str, str, dict[str, str]]:
    trace_id, span_id = f"{n:032x}", f"{n:016x}"
    return trace_id, span_id, {"traceparent": f"00-{trace_id}-{span_id}-01"}


def _until_closed(
    ws: WebSocketTestSession, most: int = 200
) -> tuple[list[dict[str, Any]], WebSocketDisconnect]:
    """The frames up to the close (at most `most`: a connection left open fails, not hangs)."""
    frames: list[dict[str, Any]] = []
    with pytest.raises(WebSocketDisconnect) as closed:
        for _ in range(most):
            frames.append(ws.receive_json())
    return frames, closed.value


def _final(ws: WebSocketTestSession) -> dict[str, Any]:
    while (frame := ws.receive_json())["type"] in ("token", "warning"):
        pass
    return dict(frame)


def _named(spans: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [s for s in spans.get_finished_spans() if s.name == name]


def test_a_frame_flood_is_refused_then_closed_with_1008_and_leaves_one_span_and_event(
    make_client: Callable[..., TestClient], admin: Admin, spans: InMemorySpanExporter
) -> None:
    client = make_client(frames_per_second=1, frame_burst=5, abuse_frames=10)
    with client.websocket_connect("/ws/chat", headers=gateway_headers("alice")) as ws:
        welcome = ws.receive_json()
        for _ in range(100):
            ws.send_text("not json")
        frames, closed = _until_closed(ws, most=30)
    answers = [f["code"] for f in frames]
    assert answers[:5] == ["invalid_json"] * 5  # the burst: answered as ever
    assert answers[5:] and set(answers[5:]) == {"rate_limited"}
    assert len(answers) < 30, "each refused frame answered until the close, no more"
    assert closed.code == CloseCode.POLICY_VIOLATION
    assert "too many frames" in closed.reason

    (connect,) = _named(spans, SpanName.CONNECT)
    assert len(_named(spans, SpanName.REJECT)) == 5, "no span per refused frame"
    (refused,) = _named(spans, SpanName.REFUSED)
    assert refused.parent is not None and refused.parent.span_id == connect.context.span_id
    assert refused.context.trace_id == connect.context.trace_id
    assert refused.status.status_code is StatusCode.ERROR
    attributes = dict(refused.attributes or {})
    assert attributes[Attr.ERROR_TYPE] == "rate_limited"
    assert attributes[Attr.CLOSE_CODE] == CloseCode.POLICY_VIOLATION
    count = attributes[Attr.FRAMES_REFUSED]
    assert isinstance(count, int) and count >= len(answers) - 5
    assert attributes[Attr.CONVERSATION_ID] == welcome["conversation_id"]

    events = admin(lambda s: flow_repo.flow_events(s, conversation_id=welcome["conversation_id"]))
    (row,) = [e for e in events if e.kind == Flow.REFUSED]
    assert (row.name, row.status) == ("rate_limited", "denied")
    assert row.trace_id == f"{connect.context.trace_id:032x}"
    assert row.detail["count"] == count
    assert row.detail["close_code"] == CloseCode.POLICY_VIOLATION
    assert len([e for e in events if e.kind == Flow.FRAME]) == 5


def test_frames_refused_without_a_flood_are_recorded_once_when_the_connection_ends(
    make_client: Callable[..., TestClient], admin: Admin, spans: InMemorySpanExporter
) -> None:
    client = make_client(frames_per_second=1, frame_burst=3, abuse_frames=100)
    with client.websocket_connect("/ws/chat", headers=gateway_headers("alice")) as ws:
        welcome = ws.receive_json()
        for _ in range(6):
            ws.send_json({"type": "ping"})
        answers = [ws.receive_json() for _ in range(6)]
    assert answers[:3] == [{"type": "pong"}] * 3
    assert [(a["type"], a["code"]) for a in answers[3:]] == [("error", "rate_limited")] * 3
    (refused,) = _named(spans, SpanName.REFUSED)
    assert refused.attributes is not None
    assert refused.attributes[Attr.FRAMES_REFUSED] == 3
    assert Attr.CLOSE_CODE not in refused.attributes
    events = admin(lambda s: flow_repo.flow_events(s, conversation_id=welcome["conversation_id"]))
    (row,) = [e for e in events if e.kind == Flow.REFUSED]
    assert (row.name, row.detail) == ("rate_limited", {"count": 3})


def test_a_dashboards_connection_is_not_throttled_twice(
    make_client: Callable[..., TestClient], spans: InMemorySpanExporter
) -> None:
    # The dashboard met the rate already (its key says it relayed the frames).
    client = make_client(frames_per_second=1, frame_burst=3, abuse_frames=100)
    headers = gateway_headers("alice") | {DASHBOARD_KEY_HEADER: DASHBOARD_KEY}
    with client.websocket_connect("/ws/chat", headers=headers) as ws:
        ws.receive_json()
        for _ in range(6):
            ws.send_json({"type": "ping"})
        answers = [ws.receive_json() for _ in range(6)]
    assert answers == [{"type": "pong"}] * 6
    assert not _named(spans, SpanName.REFUSED)


def test_a_polite_connection_leaves_no_refusal(
    make_client: Callable[..., TestClient], admin: Admin, spans: InMemorySpanExporter
) -> None:
    client = make_client()
    with client.websocket_connect("/ws/chat", headers=gateway_headers("alice")) as ws:
        welcome = ws.receive_json()
        for _ in range(3):
            ws.send_json({"type": "ping"})
            assert ws.receive_json() == {"type": "pong"}
        ws.send_json({"type": "message", "text": "hello"})
        assert _final(ws)["type"] == "done"
    assert not _named(spans, SpanName.REFUSED)
    events = admin(lambda s: flow_repo.flow_events(s, conversation_id=welcome["conversation_id"]))
    assert not [e for e in events if e.kind == Flow.REFUSED]


def test_messages_awaiting_an_answer_are_capped_and_the_rest_answered_in_order(
    make_client: Callable[..., TestClient], admin: Admin, spans: InMemorySpanExporter
) -> None:
    model = HeldModel()
    client = make_client(model=model, max_pending_messages=2)
    (a, _, trace_a), (b, _, trace_b), (c, c_span, trace_c) = map(_traceparent, (1, 2, 3))
    try:
        with client.websocket_connect("/ws/chat", headers=gateway_headers("alice")) as ws:
            welcome = ws.receive_json()
            ws.send_json({"type": "message", "text": "first", "trace": trace_a})
            assert ws.receive_json() == {"type": "token", "text": "held "}  # being answered
            ws.send_json({"type": "message", "text": "second", "trace": trace_b})  # waits
            ws.send_json({"type": "message", "text": "third", "trace": trace_c})  # one too many
            ws.send_json({"type": "ping"})
            refused = ws.receive_json()
            # Frames are read while an answer is held: the ping is answered at once.
            assert ws.receive_json() == {"type": "pong"}
            model.go.set()
            finals = [_final(ws), _final(ws)]
            # The cap counts the answer in progress: once it is done, one more is accepted.
            ws.send_json({"type": "message", "text": "fourth"})
            assert _final(ws)["type"] == "done"
    finally:
        model.go.set()
    assert (refused["type"], refused["code"], refused["trace_id"]) == (
        "error",
        "too_many_pending",
        c,
    )
    assert [(f["type"], f["trace_id"]) for f in finals] == [("done", a), ("done", b)]

    (turn,) = [s for s in _named(spans, SpanName.TURN) if s.context.trace_id == int(c, 16)]
    assert turn.parent is not None and turn.parent.span_id == int(c_span, 16)
    assert turn.status.status_code is StatusCode.ERROR
    assert turn.attributes is not None and turn.attributes[Attr.ERROR_TYPE] == "too_many_pending"
    events = admin(lambda s: flow_repo.flow_events(s, trace_id=c))
    assert [(e.kind, e.name, e.status) for e in events] == [
        (Flow.REFUSED, "too_many_pending", "denied")
    ]
    assert events[0].conversation_id == welcome["conversation_id"]
    messages = admin(
        lambda s: conversations_repo.conversation_messages(s, welcome["conversation_id"])
    )
    assert [m.content for m in messages if m.role == "user"] == ["first", "second", "fourth"]


def test_a_turn_in_progress_when_the_token_expires_is_answered_then_the_connection_closes(
    make_client: Callable[..., TestClient],
) -> None:
    model = HeldModel()
    client = make_client(model=model)
    token = issue_token("alice", SECRET, ttl_seconds=2)
    expires_at = jwt.decode(token, options={"verify_signature": False})["exp"]
    headers = {"x-user-id": "alice", "authorization": f"Bearer {token}"}
    try:
        with client.websocket_connect("/ws/chat", headers=headers) as ws:
            ws.receive_json()
            ws.send_json({"type": "message", "text": "first"})
            assert ws.receive_json() == {"type": "token", "text": "held "}
            ws.send_json({"type": "message", "text": "queued before the expiry"})
            time.sleep(expires_at - time.time() + 0.3)  # it expires while the answer is held
            ws.send_json({"type": "message", "text": "after the expiry"})
            model.go.set()
            frames, closed = _until_closed(ws)
    finally:
        model.go.set()
    finals = [f for f in frames if f["type"] != "token"]
    assert [f["type"] for f in finals] == ["done"], "only the turn in progress is answered"
    assert (closed.code, closed.reason) == (CloseCode.UNAUTHENTICATED, "token expired")


def test_a_client_that_leaves_while_answers_wait_frees_its_slot(
    make_client: Callable[..., TestClient],
) -> None:
    model = HeldModel()
    client = make_client(model=model, max_connections_per_user=1)
    try:
        with client.websocket_connect("/ws/chat", headers=gateway_headers("alice")) as ws:
            ws.receive_json()
            for text in ("one", "two", "three"):
                ws.send_json({"type": "message", "text": text})
            assert ws.receive_json() == {"type": "token", "text": "held "}
        with client.websocket_connect("/ws/chat", headers=gateway_headers("alice")) as again:
            assert again.receive_json()["type"] == "welcome"
            model.go.set()
            again.send_json({"type": "message", "text": "hello"})
            assert _final(again)["type"] == "done"
    finally:
        model.go.set()
