"""A proxy written the origin project's way (accept, `websockets.connect` upstream with the
bearer token, two forwarding loops), in front of a backend, each instrumented by one line:
one message is one trace across both, and the session trace holds the upstream handshake."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn
import websockets
from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from fastapi.testclient import TestClient
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from otel.instrumentation import telemetry_config
from otel.names import Attr, Event, LinkRole, SpanName
from otel.websocket import (
    ChatTracingMiddleware,
    instrument_websockets_client,
    uninstrument_websockets_client,
)
from tests.otel.test_websocket_server import CLIENT_SPAN, CLIENT_TRACE, TRACEPARENT, backend
from tests.whole_stack.origin.proxy import create_app


def origin_style_proxy(upstream_url: str, message_at: str = "forward") -> FastAPI:
    """tests/whole_stack/origin's proxy, traced as its `serve` does, into this process's spans."""
    app = create_app(upstream_url)
    app.add_middleware(ChatTracingMiddleware, message_span=SpanName.RELAY, message_at=message_at)
    return app


def refusing_proxy(upstream_url: str) -> FastAPI:
    """A proxy that answers some messages itself (its own limit) and forwards the rest."""
    app = FastAPI(telemetry=telemetry_config())

    @app.websocket("/ws/chat")
    async def chat(websocket: WebSocket) -> None:
        await websocket.accept()
        async with websockets.connect(upstream_url) as upstream:

            async def back() -> None:
                async for message in upstream:
                    await websocket.send_text(str(message))

            relay = asyncio.create_task(back())
            try:
                while True:
                    text = await websocket.receive_text()
                    if '"refuse me"' in text:
                        await websocket.send_json({"type": "error", "error": "no", "code": "mine"})
                    else:
                        await upstream.send(text)
            except WebSocketDisconnect:
                relay.cancel()

    app.add_middleware(ChatTracingMiddleware, message_span=SpanName.RELAY, message_at="forward")
    return app


@pytest.fixture
def backend_url() -> Iterator[str]:
    """The backend under uvicorn, a real WebSocket server on a free port."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(backend(first_hop=False), port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    yield f"ws://127.0.0.1:{port}/ws/chat?token=ok"
    server.should_exit = True
    thread.join(10)


@pytest.fixture
def traced_client() -> Iterator[None]:
    instrument_websockets_client()
    yield
    uninstrument_websockets_client()


def _one(spans: InMemorySpanExporter, name: str) -> ReadableSpan:
    found = [s for s in spans.get_finished_spans() if s.name == name]
    assert len(found) == 1, [s.name for s in spans.get_finished_spans()]
    return found[0]


@pytest.mark.parametrize("message_at", ["forward", "receive"])
def test_one_message_is_one_trace_through_an_origin_style_proxy(
    spans: InMemorySpanExporter, backend_url: str, traced_client: None, message_at: str
) -> None:
    proxy = origin_style_proxy(backend_url, message_at)
    with TestClient(proxy).websocket_connect("/ws/chat?token=ok") as ws:
        welcome = ws.receive_json()
        ws.send_json({"type": "message", "text": "hi", "trace": {"traceparent": TRACEPARENT}})
        while (done := ws.receive_json())["type"] == "token":
            pass
    deadline = time.monotonic() + 5  # the backend's spans end in its own thread
    while len([s for s in spans.get_finished_spans() if s.name == SpanName.CONNECT]) < 2:
        assert time.monotonic() < deadline, [s.name for s in spans.get_finished_spans()]
        time.sleep(0.02)
    assert welcome["type"] == "welcome"
    relay, turn = _one(spans, SpanName.RELAY), _one(spans, SpanName.TURN)
    upstream = _one(spans, SpanName.UPSTREAM_CONNECT)
    connects = [s for s in spans.get_finished_spans() if s.name == SpanName.CONNECT]
    proxy_connect = next(s for s in connects if s.parent is None)
    backend_connect = next(s for s in connects if s.parent is not None)

    # The message trace: client -> relay -> turn, the reply naming it.
    assert f"{relay.context.trace_id:032x}" == CLIENT_TRACE == done["trace_id"]
    assert relay.parent is not None and f"{relay.parent.span_id:016x}" == CLIENT_SPAN
    assert turn.parent is not None and turn.parent.span_id == relay.context.span_id
    assert Event.FIRST_TOKEN in [e.name for e in relay.events]
    assert dict(relay.attributes or {})[Attr.TOKEN_FRAMES] == 2
    # The session trace: proxy connect -> upstream connect -> backend connect.
    assert upstream.kind is SpanKind.CLIENT
    assert upstream.parent is not None and upstream.parent.span_id == proxy_connect.context.span_id
    assert backend_connect.parent is not None
    assert backend_connect.parent.span_id == upstream.context.span_id
    assert "token=REDACTED" in str(dict(proxy_connect.attributes or {})[Attr.URL_FULL])
    # Links from the message trace into the session trace, each to the span it came through.
    (relay_link,) = relay.links
    assert relay_link.context.span_id == upstream.context.span_id
    assert dict(relay_link.attributes or {})[Attr.LINK_ROLE] == LinkRole.UPSTREAM_CONNECT
    (turn_link,) = turn.links
    assert turn_link.context.span_id == upstream.context.span_id
    assert dict(turn_link.attributes or {})[Attr.LINK_ROLE] == LinkRole.GATEWAY


def test_a_refused_upstream_handshake_is_recorded(
    spans: InMemorySpanExporter, backend_url: str, traced_client: None
) -> None:
    proxy = origin_style_proxy(backend_url.replace("token=ok", "token=bad"))
    with (
        contextlib.suppress(Exception),
        TestClient(proxy).websocket_connect("/ws/chat?token=x") as ws,
    ):
        ws.receive_json()
    upstream = _one(spans, SpanName.UPSTREAM_CONNECT)
    assert dict(upstream.attributes or {})[Attr.HTTP_STATUS] == 403


def test_a_message_the_proxy_answers_itself_is_no_relayed_message(
    spans: InMemorySpanExporter, backend_url: str, traced_client: None
) -> None:
    with TestClient(refusing_proxy(backend_url)).websocket_connect("/ws/chat") as ws:
        ws.receive_json()
        ws.send_json({"type": "message", "text": "refuse me"})
        refused = ws.receive_json()
        ws.send_json({"type": "message", "text": "hi", "trace": {"traceparent": TRACEPARENT}})
        while (done := ws.receive_json())["type"] == "token":
            pass
    assert refused["code"] == "mine" and done["type"] == "done"
    deadline = time.monotonic() + 5
    while not [s for s in spans.get_finished_spans() if s.name == SpanName.TURN]:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    relay = _one(spans, SpanName.RELAY)  # the forwarded one only
    assert f"{relay.context.trace_id:032x}" == CLIENT_TRACE == done["trace_id"]
    turn = _one(spans, SpanName.TURN)
    assert turn.parent is not None and turn.parent.span_id == relay.context.span_id
