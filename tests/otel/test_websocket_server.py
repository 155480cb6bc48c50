"""The server-side instrumentor on handlers written without any tracing code, in process:
spans through the in-memory exporter, checked for parents, links, events and attributes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import pytest
from fastapi import FastAPI, WebSocket
from fastapi.testclient import TestClient
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from starlette.types import Scope
from starlette.websockets import WebSocketDisconnect

from otel.instrumentation import telemetry_config
from otel.names import Attr, ClientContext, Event, LinkRole, SpanName
from otel.websocket import (
    ChatTracingMiddleware,
    FrameCodec,
    current_connection,
    instrument_chat_server,
)
from tests.whole_stack.origin.protocols import ACME

CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"
handler_tracer = trace.get_tracer("the handler")


def backend_app() -> FastAPI:
    """An OMNI2-style backend as a team writes it: no tracing code but its own model span
    (FastAPI's own telemetry off, as the instrumentor's docs say: it would trace the
    connection as one long request)."""
    app = FastAPI(telemetry=telemetry_config())

    @app.websocket("/ws/chat")
    async def chat(websocket: WebSocket) -> None:
        if websocket.query_params.get("token") != "ok":
            await websocket.close(code=4401, reason="authentication failed")
            return
        await websocket.accept()
        await websocket.send_json({"type": "welcome", "conversation_id": "c-1", "user_id": "u-1"})
        with contextlib.suppress(WebSocketDisconnect):
            await _answer(websocket)

    return app


def backend(**options: object) -> FastAPI:
    """The backend traced by the middleware itself, with `options`."""
    app = backend_app()
    app.add_middleware(ChatTracingMiddleware, **({"message_span": SpanName.TURN} | options))
    return app


async def _answer(websocket: WebSocket) -> None:
    while True:
        frame = await websocket.receive_json()
        if frame.get("text") == "fail":
            await websocket.send_json({"type": "error", "error": "no", "code": "refused"})
            continue
        if frame.get("text") == "hang":
            continue  # never answered
        with handler_tracer.start_as_current_span("chat offline-model"):
            pass
        for token in ("Hel", "lo"):
            await websocket.send_json({"type": "token", "text": token})
        await websocket.send_json({"type": "done", "result": {"tokens_used": 2}})


def _named(spans: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [s for s in spans.get_finished_spans() if s.name == name]


def _tree(spans: InMemorySpanExporter) -> str:
    return "\n".join(
        f"{s.name} {s.context.span_id:016x} parent="
        f"{s.parent.span_id if s.parent else None} {dict(s.attributes or {})}"
        for s in spans.get_finished_spans()
    )


def _chat(app: FastAPI, *frames: dict[str, object], url: str = "/ws/chat?token=ok") -> list:
    replies = []
    with TestClient(app).websocket_connect(url) as ws:
        replies.append(ws.receive_json())
        for frame in frames:
            ws.send_json(frame)
            while (reply := ws.receive_json())["type"] == "token":
                pass
            replies.append(reply)
    return replies


def test_a_message_is_one_trace_continued_from_the_frame_with_the_handlers_spans_inside(
    spans: InMemorySpanExporter,
) -> None:
    _, done = _chat(
        backend(), {"type": "message", "text": "hi", "trace": {"traceparent": TRACEPARENT}}
    )
    (turn,) = _named(spans, SpanName.TURN)
    (model,) = _named(spans, "chat offline-model")
    (connect,) = _named(spans, SpanName.CONNECT)
    assert turn.kind is SpanKind.SERVER, _tree(spans)
    assert f"{turn.context.trace_id:032x}" == CLIENT_TRACE
    assert turn.parent is not None and f"{turn.parent.span_id:016x}" == CLIENT_SPAN
    assert model.parent is not None and model.parent.span_id == turn.context.span_id, _tree(spans)
    assert [e.name for e in turn.events] == [Event.FIRST_TOKEN]
    attributes = dict(turn.attributes or {})
    assert attributes[Attr.TOKEN_FRAMES] == 2
    assert attributes[Attr.CONVERSATION_ID] == "c-1" and attributes[Attr.USER_ID] == "u-1"
    assert attributes[Attr.CLIENT_CONTEXT] == ClientContext.CONTINUED
    # The reply names its trace; the session is a trace of its own, ended by the welcome.
    assert done["trace_id"] == CLIENT_TRACE
    assert connect.context.trace_id != turn.context.trace_id
    assert connect.end_time is not None and connect.end_time <= turn.start_time


def test_a_client_without_context_gets_a_trace_of_its_own_and_its_flags_decide_nothing(
    spans: InMemorySpanExporter,
) -> None:
    unsampled = f"00-{'1' * 32}-{'2' * 16}-00"
    _chat(
        backend(),
        {"type": "message", "text": "hi"},
        {"type": "message", "text": "hi", "trace": {"traceparent": unsampled}},
        {"type": "message", "text": "hi", "trace": {"traceparent": "garbage"}},
    )
    turns = _named(spans, SpanName.TURN)
    contexts = [dict(t.attributes or {})[Attr.CLIENT_CONTEXT] for t in turns]
    assert contexts == [ClientContext.NONE, ClientContext.CONTINUED, ClientContext.MALFORMED]
    assert turns[0].parent is None and turns[2].parent is None
    assert dict(turns[1].attributes or {})[Attr.CLIENT_SAMPLED] is False  # recorded, obeyed not


def test_a_server_that_samples_out_a_connection_drops_it_whole(
    spans: InMemorySpanExporter,
) -> None:
    _chat(
        backend(sample_ratio=0.0),
        {"type": "message", "text": "hi", "trace": {"traceparent": TRACEPARENT}},
    )
    assert spans.get_finished_spans() == ()


def test_failures_refusals_and_unanswered_messages_are_recorded(
    spans: InMemorySpanExporter,
) -> None:
    (_, error) = _chat(backend(), {"type": "message", "text": "fail"})
    (turn,) = _named(spans, SpanName.TURN)
    assert turn.status.status_code is StatusCode.ERROR
    assert dict(turn.attributes or {})[Attr.ERROR_TYPE] == "refused"
    assert error["trace_id"] == f"{turn.context.trace_id:032x}"
    spans.clear()

    with pytest.raises(WebSocketDisconnect), TestClient(backend()).websocket_connect("/ws/chat"):
        pass
    (refused,) = _named(spans, SpanName.CONNECT)
    assert refused.status.status_code is StatusCode.ERROR
    assert dict(refused.attributes or {})[Attr.CLOSE_CODE] == 4401
    spans.clear()

    with TestClient(backend()).websocket_connect("/ws/chat?token=ok") as ws:
        ws.receive_json()
        ws.send_json({"type": "message", "text": "hang"})
    (hung,) = _named(spans, SpanName.TURN)
    assert dict(hung.attributes or {})[Attr.ERROR_TYPE] == "no_reply"


def test_frames_that_open_nothing_pass_through_untouched(spans: InMemorySpanExporter) -> None:
    seen: list[str] = []
    app = FastAPI(telemetry=telemetry_config())

    @app.websocket("/ws/chat")
    async def echo(websocket: WebSocket) -> None:
        await websocket.accept()
        for _ in range(3):
            seen.append(await websocket.receive_text())
        await websocket.close()

    app.add_middleware(ChatTracingMiddleware)
    nested = "[" * 100_000
    with TestClient(app).websocket_connect("/ws/chat") as ws:
        for text in ('{"type": "ping"}', "not json", nested):
            ws.send_text(text)
    assert seen == ['{"type": "ping"}', "not json", nested]
    assert [s.name for s in spans.get_finished_spans()] == [SpanName.CONNECT]


def test_another_protocol_through_its_codec(spans: InMemorySpanExporter) -> None:
    codec = ACME  # tests/whole_stack/origin/protocols.py: what another team writes
    app = FastAPI(telemetry=telemetry_config())

    @app.websocket("/ws/chat")
    async def chat(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.receive_json()
        await websocket.send_json({"op": "chunk", "data": "x"})
        await websocket.send_json({"op": "end"})
        with contextlib.suppress(WebSocketDisconnect):
            await websocket.receive_json()

    app.add_middleware(ChatTracingMiddleware, codec=codec, message_span=SpanName.TURN)
    with TestClient(app).websocket_connect("/ws/chat") as ws:
        ws.send_json({"op": "ask", "q": "?", "meta": {"trace": {"traceparent": TRACEPARENT}}})
        assert ws.receive_json() == {"op": "chunk", "data": "x"}
        end = ws.receive_json()
    (turn,) = _named(spans, SpanName.TURN)
    assert f"{turn.context.trace_id:032x}" == CLIENT_TRACE == end["meta"]["trace_id"]
    assert dict(turn.attributes or {})[Attr.TOKEN_FRAMES] == 1


@pytest.mark.parametrize("bad", [{"kind_key": "op", "ends": {"end"}, "fails": {"fail"}}])
def test_a_codec_that_contradicts_itself_is_refused(bad: dict[str, object]) -> None:
    make: Callable[..., FrameCodec] = FrameCodec
    with pytest.raises(ValueError, match="must also end"):
        make(**bad)


def test_token_frames_are_counted_without_a_parse(
    spans: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Most frames of a stream are tokens: the proxy's per-frame work for them is a check of
    their first bytes, not a JSON parse."""
    import otel.websocket.server as server

    parsed: list[str] = []
    real = server._json_object
    monkeypatch.setattr(server, "_json_object", lambda text: parsed.append(text) or real(text))
    _chat(backend(), {"type": "message", "text": "hi"})
    tokens = [t for t in parsed if '"token"' in t]
    assert parsed and not tokens, parsed
    (turn,) = _named(spans, SpanName.TURN)
    assert dict(turn.attributes or {})[Attr.TOKEN_FRAMES] == 2


def test_the_one_call_takes_its_settings_from_the_environment(
    spans: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    plain = backend_app()
    monkeypatch.setenv("OMNI_TRACE_WS_SAMPLE_RATIO", "0")
    monkeypatch.setenv("OMNI_TRACE_WS_MESSAGE_SPAN", "answer")
    instrument_chat_server(plain, role="proxy", message_at="receive")
    _chat(plain, {"type": "message", "text": "hi"})
    assert spans.get_finished_spans() == ()  # sampled out by the setting
    monkeypatch.setenv("OMNI_TRACE_WS_SAMPLE_RATIO", "1")
    traced = backend_app()
    instrument_chat_server(traced, role="proxy", message_at="receive")
    _chat(traced, {"type": "message", "text": "hi"})
    assert [s.name for s in spans.get_finished_spans() if s.name == "answer"] == ["answer"]


@pytest.mark.parametrize(
    ("name", "value"),
    [("OMNI_TRACE_WS_SAMPLE_RATIO", "2"), ("OMNI_TRACE_WS_CLIENT_TRACE", "obey-the-client")],
)
def test_a_bad_setting_is_named(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=name):
        instrument_chat_server(FastAPI(), role="backend")


GATEWAY_TRACE = "0af7651916cd43dd8448eb211c80319c"
GATEWAY_SPAN = "b7ad6b7169203331"
GATEWAY = {"traceparent": f"00-{GATEWAY_TRACE}-{GATEWAY_SPAN}-01"}


def queueing_backend(**options: object) -> FastAPI:
    """A backend that reads frames in one task and answers them in a worker task, one at a
    time, deciding per message before it answers (`held` is refused untraced): it opens
    each message it answers itself (`message_at="app"`)."""
    app = FastAPI(telemetry=telemetry_config())

    @app.websocket("/ws/chat")
    async def chat(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_json({"type": "welcome", "conversation_id": "c-2", "user_id": "u-2"})
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()

        async def work() -> None:
            while (frame := await queue.get()) is not None:
                if frame.get("text") == "held":
                    await websocket.send_json({"type": "error", "error": "held", "code": "held"})
                    continue
                connection = current_connection()
                assert connection is not None
                span = connection.open_message(frame)
                trace_id = f"{span.get_span_context().trace_id:032x}"
                with trace.use_span(span, end_on_exit=False):
                    with handler_tracer.start_as_current_span("chat offline-model"):
                        pass
                    if frame.get("text") == "fail":
                        span.set_attribute(Attr.ERROR_TYPE, "provider_timeout")
                        span.set_status(StatusCode.ERROR, "provider took 30 s (detail)")
                        error = {"type": "error", "error": "try again", "code": "model_error"}
                        await websocket.send_json(error | {"trace_id": trace_id})
                        continue
                    await websocket.send_json({"type": "token", "text": "Hi"})
                    await websocket.send_json({"type": "done", "trace_id": trace_id})

        worker = asyncio.create_task(work())
        with contextlib.suppress(WebSocketDisconnect):
            while True:
                await queue.put(await websocket.receive_json())
        await queue.put(None)
        await worker

    app.add_middleware(
        ChatTracingMiddleware,
        **({"message_span": SpanName.TURN, "message_at": "app", "end_unnamed": False} | options),
    )
    return app


def test_an_app_that_answers_in_a_worker_opens_each_message_it_takes_up(
    spans: InMemorySpanExporter,
) -> None:
    held, done, failed = _chat(
        queueing_backend(),
        {"type": "message", "text": "held"},
        {"type": "message", "text": "hi", "trace": {"traceparent": TRACEPARENT}},
        {"type": "message", "text": "fail"},
    )[1:]
    assert held["type"] == "error" and done["type"] == "done" and failed["type"] == "error"
    turns = _named(spans, SpanName.TURN)
    assert len(turns) == 2, _tree(spans)  # the held message is no trace
    answered = next(t for t in turns if f"{t.context.trace_id:032x}" == CLIENT_TRACE)
    assert answered.parent is not None and f"{answered.parent.span_id:016x}" == CLIENT_SPAN
    assert [e.name for e in answered.events] == [Event.FIRST_TOKEN]
    models = _named(spans, "chat offline-model")
    assert {m.parent.span_id for m in models if m.parent} == {t.context.span_id for t in turns}
    # The app's account of its failure is kept, not replaced by the frame's words.
    (refused,) = [t for t in turns if t is not answered]
    assert refused.status.status_code is StatusCode.ERROR
    assert refused.status.description == "provider took 30 s (detail)"
    assert dict(refused.attributes or {})[Attr.ERROR_TYPE] == "provider_timeout"


def test_per_connection_options_say_who_decided(spans: InMemorySpanExporter) -> None:
    """A hop of ours in front (here: a header says so) decided; else this server does."""

    def entry(scope: Scope) -> dict[str, Any]:
        return {"first_hop": (b"x-via", b"hop") not in scope["headers"]}

    app = backend(per_connection=entry, sample_ratio=0.0)
    with TestClient(app).websocket_connect("/ws/chat?token=ok", headers=GATEWAY) as ws:
        ws.receive_json()
    assert spans.get_finished_spans() == ()  # a first hop: this server sampled it out
    headers = GATEWAY | {"x-via": "hop"}
    with TestClient(app).websocket_connect("/ws/chat?token=ok", headers=headers) as ws:
        ws.receive_json()
    (connect,) = _named(spans, SpanName.CONNECT)  # the hop's decision: traced
    assert connect.parent is not None and f"{connect.parent.span_id:016x}" == GATEWAY_SPAN


@pytest.mark.parametrize("sampled", ["01", "00"])
def test_behind_a_trusted_gateway_the_session_continues_its_span_as_this_server_decides(
    spans: InMemorySpanExporter, sampled: str
) -> None:
    headers = {"traceparent": GATEWAY["traceparent"][:-2] + sampled}
    frame = {"type": "message", "text": "hi", "trace": {"traceparent": TRACEPARENT}}
    with TestClient(backend(gateway="parent")).websocket_connect(
        "/ws/chat?token=ok", headers=headers
    ) as ws:
        ws.receive_json()
        ws.send_json(frame)
        while ws.receive_json()["type"] != "done":
            pass
    (connect,) = _named(spans, SpanName.CONNECT)  # traced whatever the gateway's flags said
    assert f"{connect.context.trace_id:032x}" == GATEWAY_TRACE
    assert connect.parent is not None and f"{connect.parent.span_id:016x}" == GATEWAY_SPAN
    (turn,) = _named(spans, SpanName.TURN)  # the client's context, recorded; a gateway link
    assert dict(turn.attributes or {})[Attr.CLIENT_CONTEXT] == ClientContext.CONTINUED
    assert [
        (f"{link.context.span_id:016x}", dict(link.attributes or {})) for link in turn.links
    ] == [(GATEWAY_SPAN, {Attr.LINK_ROLE: LinkRole.GATEWAY})]


def test_behind_a_gateway_that_starts_its_own_trace_the_session_links_to_it(
    spans: InMemorySpanExporter,
) -> None:
    url = f"/ws/chat?token=ok&traceparent={TRACEPARENT}"
    with TestClient(backend(gateway="link")).websocket_connect(url, headers=GATEWAY) as ws:
        ws.receive_json()
    (connect,) = _named(spans, SpanName.CONNECT)
    assert f"{connect.context.trace_id:032x}" == CLIENT_TRACE  # the query's, not the header's
    assert [
        (f"{link.context.span_id:016x}", dict(link.attributes or {})) for link in connect.links
    ] == [(GATEWAY_SPAN, {Attr.LINK_ROLE: LinkRole.FRONT_GATEWAY})]


@pytest.mark.parametrize("record_closes", [True, False])
def test_an_app_that_records_its_own_closes_gets_no_close_span(
    spans: InMemorySpanExporter, record_closes: bool
) -> None:
    app = FastAPI(telemetry=telemetry_config())

    @app.websocket("/ws/chat")
    async def chat(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_json({"type": "welcome", "conversation_id": "c", "user_id": "u"})
        await websocket.close(code=4401, reason="token expired")

    app.add_middleware(ChatTracingMiddleware, record_closes=record_closes)
    with TestClient(app).websocket_connect("/ws/chat") as ws:
        ws.receive_json()
        with pytest.raises(WebSocketDisconnect):
            ws.receive_json()
    closes = _named(spans, SpanName.CLOSE)
    assert len(closes) == (1 if record_closes else 0), _tree(spans)


def stalling_backend(pauses_ms: list[float]) -> FastAPI:
    """A backend whose stream pauses `pauses_ms[i]` before token frame i + 1."""
    app = FastAPI(telemetry=telemetry_config())

    @app.websocket("/ws/chat")
    async def chat(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_json({"type": "welcome", "conversation_id": "c-1", "user_id": "u-1"})
        with contextlib.suppress(WebSocketDisconnect):
            while True:
                await websocket.receive_json()
                await websocket.send_json({"type": "token", "text": "t"})
                for pause in pauses_ms:
                    await asyncio.sleep(pause / 1000)
                    await websocket.send_json({"type": "token", "text": "t"})
                await websocket.send_json({"type": "done", "result": {}})

    app.add_middleware(ChatTracingMiddleware, message_span=SpanName.TURN)
    return app


def test_each_message_span_has_the_gaps_between_its_token_frames_as_this_layer_saw_them(
    spans: InMemorySpanExporter,
) -> None:
    _chat(stalling_backend([5, 5, 200, 5, 5]), {"type": "message", "text": "hi"})
    (turn,) = _named(spans, SpanName.TURN)
    a = dict(turn.attributes or {})
    assert a[Attr.TOKEN_FRAMES] == 6 and a[Attr.STREAM_GAPS] == 5, a
    assert 200 <= a[Attr.STREAM_GAP_MAX] < 400, a
    assert a[Attr.STREAM_GAP_P50] < 100 <= a[Attr.STREAM_GAP_P95], a  # 5 gaps: p95 is the max
    assert a[Attr.STREAM_FIRST_TO_LAST] >= 220, a
    # The stall began at the third token frame: after the first two gaps, within the span.
    assert 10 <= a[Attr.STREAM_GAP_MAX_AT] < a[Attr.STREAM_FIRST_TO_LAST], a
    assert turn.start_time is not None and turn.end_time is not None
    span_ms = (turn.end_time - turn.start_time) / 1e6
    assert a[Attr.STREAM_GAP_MAX_AT] + a[Attr.STREAM_GAP_MAX] <= span_ms, (a, span_ms)


def test_a_stream_of_one_token_frame_has_no_gaps_to_report(spans: InMemorySpanExporter) -> None:
    _chat(stalling_backend([]), {"type": "message", "text": "hi"})
    (turn,) = _named(spans, SpanName.TURN)
    a = dict(turn.attributes or {})
    assert a[Attr.TOKEN_FRAMES] == 1
    assert not [k for k in a if k.startswith("chat.stream.")], a
