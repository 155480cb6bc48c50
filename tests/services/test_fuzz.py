"""Property-based fuzzing of what a client controls: frames and trace carriers.

Against the dashboard's pieces (query token, trace context, relay), the dashboard in process
(relaying to a small upstream that answers every frame, as OMNI2 does) and OMNI2 in process:
whatever arrives, nothing raises, every frame is answered, the connection stays usable, and
the client never decides what is traced.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from starlette.testclient import WebSocketTestSession

from otel.propagation import client_parent, extract_frame, remote_span_context
from otel.sampling import decision_of
from services.common.protocol import FrameError, parse_client_frame
from services.common.tokens import issue_token
from services.dashboard.app import create_app as create_dashboard
from services.dashboard.relay import MessageRefused
from services.dashboard.settings import DashboardSettings
from services.dashboard.token_query import take_token
from services.omni2.app import create_app
from services.omni2.settings import Omni2Settings
from tests.services.dashboard.relaying import Relay

SECRET = "fuzz-secret-0123456789abcdef0123456789"
HEX = "0123456789abcdef"

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
traceparents = st.one_of(
    st.text(max_size=80),
    st.builds(
        lambda v, t, s, f: f"{v}-{t}-{s}-{f}",
        st.sampled_from(["00", "01", "ff", "0"]),
        st.text(HEX, min_size=31, max_size=33),
        st.text(HEX, min_size=15, max_size=17),
        st.sampled_from(["00", "01", "ff", "0g", ""]),
    ),
)
trace_objects = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {"traceparent": traceparents},
        optional={"tracestate": st.text(max_size=600), "baggage": st.text(max_size=100)},
    ),
)
message_frames = st.builds(
    lambda text, trace, extra: json.dumps(
        {"type": "message", "text": text, "trace": trace, **extra}
    ),
    st.text(min_size=1, max_size=40),
    trace_objects,
    st.dictionaries(st.text(max_size=8), json_values, max_size=3),
)
deep = st.builds(
    lambda n, c: c * n, st.integers(1, 50_000), st.sampled_from(["[", "{", '{"a":', "[{"])
)
frames = st.one_of(st.text(max_size=200), deep, message_frames, json_values.map(json.dumps))


@given(frames)
def test_frame_parsing_never_raises_anything_but_a_frame_error(text: str) -> None:
    try:
        parse_client_frame(text)
    except FrameError as err:
        assert err.error_type and str(err)


@given(st.binary(max_size=300))
def test_query_strings_never_break_the_token_filter(query: bytes) -> None:
    token, rest = take_token(query)
    assert b"token=" not in rest.lower()
    assert token is None or isinstance(token, str)


@given(st.dictionaries(st.text(max_size=12), json_values | traceparents, max_size=4), st.booleans())
def test_client_context_never_decides_sampling(carrier: dict[str, Any], keep: bool) -> None:
    ctx = client_parent(carrier, keep=keep, link=False).context
    assert decision_of(ctx) is keep
    parent = remote_span_context(ctx)
    assert parent is None or (parent.trace_flags.sampled and len(parent.trace_state) == 0)


@given(st.lists(frames, max_size=5))
def test_the_relay_forwards_every_frame_and_traces_messages_by_server_decision(
    texts: list[str],
) -> None:
    relay = Relay(keep=True, link=False, max_pending=3)
    for text in texts:
        try:
            forwarded = relay.to_upstream(text)
        except MessageRefused as refused:
            assert refused.frame["code"] == "too_many_pending"
            continue
        if forwarded != text:  # a message: rewritten with the relay span, sampled
            parent = remote_span_context(extract_frame(json.loads(forwarded)))
            assert parent is not None and parent.trace_flags.sampled
        relay.from_upstream(text)  # hostile upstream text is observed without raising
    relay.close("end of test")


@pytest.fixture(scope="module")
def omni2(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebSocketTestSession]:
    path = Path(tmp_path_factory.mktemp("fuzz")) / "omni2.db"
    app_settings = Omni2Settings(  # type: ignore[call-arg]
        OMNI_JWT_SECRET=SECRET,
        model_token_delay_ms=0,
        database_url=f"sqlite+aiosqlite:///{path}",
        frames_per_second=10_000,  # the fuzzer sends fast; the limit has tests of its own
        frame_burst=10_000,
    )
    headers = {"x-user-id": "bob", "authorization": f"Bearer {issue_token('bob', SECRET)}"}
    with (
        TestClient(create_app(app_settings)) as client,
        client.websocket_connect("/ws/chat", headers=headers) as ws,
    ):
        assert ws.receive_json()["type"] == "welcome"
        yield ws


def _answer(ws: WebSocketTestSession) -> dict[str, Any]:
    while True:
        frame = ws.receive_json()
        if frame["type"] in ("done", "error", "blocked", "pong"):
            return dict(frame)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(frames)
@example("[" * 10_000)
@example('{"type": "message", "text": "hi", "trace": ' + "{" * 5_000)
def test_omni2_answers_every_frame_and_stays_usable(omni2: WebSocketTestSession, text: str) -> None:
    omni2.send_text(text)
    answer = _answer(omni2)
    assert answer["type"] in ("done", "error", "pong")
    if answer["type"] == "error":
        assert answer.get("code"), answer


def test_omni2_still_answers_a_normal_message_after_the_fuzzing(
    omni2: WebSocketTestSession,
) -> None:
    omni2.send_text(json.dumps({"type": "message", "text": "hello"}))
    assert _answer(omni2)["type"] == "done"


def _upstream_answer(text: str) -> dict[str, Any]:
    """What OMNI2 would answer (its frame parsing and the trace id it would continue)."""
    try:
        parse_client_frame(text)
    except FrameError as err:
        return {"type": "error", "code": err.error_type, "error": str(err)}
    parent = remote_span_context(extract_frame(json.loads(text)))
    trace_id = f"{parent.trace_id:032x}" if parent else "0" * 32
    return {"type": "pong"} if '"ping"' in text else {"type": "done", "trace_id": trace_id}


@pytest.fixture(scope="module")
def upstream_url() -> Iterator[str]:
    """A WebSocket server on a free port standing in for Traefik and OMNI2."""
    from websockets.asyncio.server import ServerConnection, serve

    async def chat(ws: ServerConnection) -> None:
        await ws.send(json.dumps({"type": "welcome", "conversation_id": "c", "user_id": "u"}))
        async for frame in ws:
            answer = _upstream_answer(frame) if isinstance(frame, str) else {"type": "error"}
            await ws.send(json.dumps(answer | {"code": answer.get("code", "x")}))

    loop = asyncio.new_event_loop()
    started = threading.Event()
    url: list[str] = []

    async def main(stop: asyncio.Event) -> None:
        async with serve(chat, "127.0.0.1", 0, max_size=None) as server:
            url.append(f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/ws/chat")
            started.set()
            await stop.wait()

    stop = asyncio.Event()
    thread = threading.Thread(target=lambda: loop.run_until_complete(main(stop)), daemon=True)
    thread.start()
    started.wait(5)
    yield url[0]
    loop.call_soon_threadsafe(stop.set)
    thread.join(5)


@pytest.fixture(scope="module")
def dashboard(
    upstream_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WebSocketTestSession]:
    app_settings = DashboardSettings(  # type: ignore[call-arg]
        OMNI_JWT_SECRET=SECRET,
        upstream_ws_url=upstream_url,
        database_url=f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('dash')}/omni2.db",
        frames_per_second=10_000,  # the fuzzer sends fast; the limit has tests of its own
        frame_burst=10_000,
    )
    with (
        TestClient(create_dashboard(app_settings)) as client,
        client.websocket_connect("/ws/chat?token=anything") as ws,
    ):
        assert ws.receive_json()["type"] == "welcome"
        yield ws


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(frames)
@example("[" * 10_000)
@example(
    '{"type": "message", "text": "hi", "trace": {"traceparent": "00-'
    + "a" * 32
    + "-"
    + "b" * 16
    + '-00"}}'
)
def test_the_dashboard_relays_every_frame_and_stays_usable(
    dashboard: WebSocketTestSession, text: str
) -> None:
    dashboard.send_text(text)
    answer = _answer(dashboard)
    expected = _upstream_answer(text)
    assert answer["type"] == expected["type"], (text[:80], answer)
