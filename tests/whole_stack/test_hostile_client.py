"""A hostile client against the running stack: it cannot hide from the trace, flood it,
crash a service or slip past a limit. Each test attacks through the dashboard (or the
service's own port) as README.md's "Security" section says it is met, and checks the answer
and the trace."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from omni_trace.stack import Stack
from omni_trace.traces import Trace, TraceFetcher, has_spans_named
from otel.names import Attr, Flow, Service, SpanName
from services.common.protocol import CloseCode
from services.common.tokens import issue_token
from services.db.repository import conversations as conversations_repo
from services.db.repository import flow as flow_repo
from tests.db import Admin
from tests.whole_stack.conftest import new_user

pytestmark = pytest.mark.stack


def _ids() -> tuple[str, str]:
    return uuid.uuid4().hex, uuid.uuid4().hex[:16]


def _url(stack: Stack, token: str, **query: str) -> str:
    params = "&".join(f"{k}={v}" for k, v in {"token": token, **query}.items())
    return f"{stack.info.dashboard_ws_url}?{params}"


async def _final(ws: ClientConnection) -> dict[str, Any]:
    while True:
        frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
        if frame["type"] in ("done", "error", "blocked", "pong"):
            return dict(frame)


async def _message(ws: ClientConnection, trace: dict[str, str] | None = None) -> dict[str, Any]:
    frame: dict[str, Any] = {"type": "message", "text": "hello"}
    if trace is not None:
        frame["trace"] = trace
    await ws.send(json.dumps(frame))
    return await _final(ws)


@pytest.fixture
def token(admin: Admin, jwt_secret: str) -> str:
    """A fresh user's token (tests never share rate windows or connection counts)."""
    return issue_token(new_user(admin), jwt_secret)


async def test_a_client_cannot_switch_tracing_off(
    stack: Stack, omni_traces: TraceFetcher, token: str
) -> None:
    session_trace, session_span = _ids()
    message_trace, message_span = _ids()
    url = _url(stack, token, traceparent=f"00-{session_trace}-{session_span}-00")
    async with connect(url) as ws:
        json.loads(await ws.recv())  # welcome
        done = await _message(
            ws, {"traceparent": f"00-{message_trace}-{message_span}-00", "tracestate": "k=v"}
        )
    assert done["type"] == "done"
    assert done["trace_id"] == message_trace  # the client's trace is continued ...
    spans = omni_traces.wait(  # ... and every layer recorded it
        message_trace,
        has_spans_named((Service.DASHBOARD, SpanName.RELAY), (Service.OMNI2, SpanName.TURN)),
        what="dashboard and omni2 spans of a message sent with flags -00",
    )
    relay = spans.one(f"{Service.DASHBOARD}:{SpanName.RELAY}")
    turn = spans.one(f"{Service.OMNI2}:{SpanName.TURN}")
    spans.expect(relay.parent_span_id == message_span, "relay continues the client's span")
    spans.expect(turn.parent_span_id == relay.span_id, "turn is a child of the relay")
    session = omni_traces.wait(
        session_trace,
        has_spans_named(
            (Service.DASHBOARD, SpanName.CONNECT),
            (Service.OMNI2, SpanName.CONNECT),
            (Service.TRAEFIK, "ReverseProxy"),
        ),
        what="the session trace of a connection opened with flags -00",
    )
    connect_span = session.one(f"{Service.DASHBOARD}:{SpanName.CONNECT}")
    session.expect(connect_span.parent_span_id == session_span, "connect continues the client")


@pytest.mark.parametrize(
    "frame",
    [
        "[" * 10_000,
        '{"type": "message", "text": "hi", "trace": ' + "[" * 10_000 + "]" * 10_000 + "}",
        '{"type": "message", "text": "hi", "trace": {"traceparent": ' + "{" * 5_000 + "}",
    ],
    ids=["nested-array", "nested-in-trace", "unclosed-in-trace"],
)
async def test_deeply_nested_json_is_answered_and_the_connection_stays_usable(
    stack: Stack, token: str, frame: str
) -> None:
    async with connect(_url(stack, token)) as ws:
        json.loads(await ws.recv())
        await ws.send(frame)
        answer = await _final(ws)
        assert answer["type"] == "error"
        assert answer["code"] == "invalid_json"
        assert (await _message(ws))["type"] == "done"


async def test_over_long_upgrade_urls_are_answered_at_once(stack: Stack, token: str) -> None:
    for base in (stack.info.dashboard_ws_url, stack.info.omni2_ws_url):
        started = time.monotonic()
        with pytest.raises(InvalidStatus) as refused:
            await connect(f"{base}?token={token}&pad={'a' * 9000}", open_timeout=5)
        assert refused.value.response.status_code == 414, base
        assert time.monotonic() - started < 2, base


async def test_a_frame_over_the_size_limit_closes_with_1009(stack: Stack, token: str) -> None:
    async with connect(_url(stack, token), max_size=None) as ws:
        json.loads(await ws.recv())
        await ws.send(json.dumps({"type": "message", "text": "x" * 70_000}))
        with pytest.raises(ConnectionClosed) as closed:
            await _final(ws)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == CloseCode.MESSAGE_TOO_BIG
    assert "exceeds" in closed.value.rcvd.reason


def _flow_events(admin: Admin, conversation: str, kind: str) -> list[Any]:
    rows = admin(lambda s: flow_repo.flow_events(s, conversation_id=conversation))
    return [r for r in rows if r.kind == kind]


async def _rate_refusal(admin: Admin, conversation: str) -> Any:
    """The conversation's one refusal row (within 10 s): a frame flood, closed."""
    deadline = time.monotonic() + 10
    while not _flow_events(admin, conversation, Flow.REFUSED) and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    (row,) = _flow_events(admin, conversation, Flow.REFUSED)
    assert row.name == "rate_limited"
    assert row.detail["count"] > 100
    assert row.detail["close_code"] == CloseCode.POLICY_VIOLATION
    return row


def _refused_under_connect(traces: TraceFetcher, trace_id: str, service: str) -> Trace:
    """The session trace, once `service`'s chat.refused span is in it, under its connect."""
    spans = traces.wait(
        trace_id,
        has_spans_named((service, SpanName.REFUSED)),
        what=f"{service}'s chat.refused span in the session trace",
    )
    refused = spans.one(f"{service}:{SpanName.REFUSED}")
    connect_span = spans.one(f"{service}:{SpanName.CONNECT}")
    spans.expect(refused.parent_span_id == connect_span.span_id, "refusal under connect")
    return spans


async def test_a_frame_flood_is_refused_then_closed_and_leaves_a_trail(
    stack: Stack, omni_traces: TraceFetcher, admin: Admin, token: str
) -> None:
    errors: list[dict[str, Any]] = []
    async with connect(_url(stack, token)) as ws:
        welcome = json.loads(await ws.recv())
        with pytest.raises(ConnectionClosed) as closed:
            for _ in range(2000):
                await ws.send('{"type": "ping"}')
            while True:
                frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
                if frame["type"] == "error":
                    errors.append(frame)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == CloseCode.POLICY_VIOLATION
    assert errors and all(e["code"] == "rate_limited" for e in errors)
    # Each refused frame is answered until the close, which bounds what a flood costs.
    assert len(errors) < 1000
    conversation = welcome["conversation_id"]
    row = await _rate_refusal(admin, conversation)
    spans = _refused_under_connect(omni_traces, row.trace_id, Service.DASHBOARD)
    spans.assert_attribute(
        f"{Service.DASHBOARD}:{SpanName.REFUSED}", Attr.CONVERSATION_ID, conversation
    )


async def _twenty_at_once(ws: ClientConnection) -> tuple[str, list[dict[str, Any]]]:
    """20 messages sent at once: the conversation and the frame that ended each."""
    welcome = json.loads(await ws.recv())
    for _ in range(20):
        await ws.send(json.dumps({"type": "message", "text": "hello"}))
    return welcome["conversation_id"], [await _final(ws) for _ in range(20)]


def _bounded_and_stored(
    admin: Admin, conversation: str, finals: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Past the 16th pending message some are refused, and every answer is stored; the
    refusals."""
    done = [f for f in finals if f["type"] == "done"]
    refused = [f for f in finals if f.get("code") == "too_many_pending"]
    # 20 sent at once while OMNI2 answers one at a time: past the 16th, some are refused.
    assert refused and len(done) >= 16 and len(done) + len(refused) == 20, finals
    rows = admin(lambda s: conversations_repo.conversation_messages(s, conversation))
    assert {f["trace_id"] for f in done} <= {r.trace_id for r in rows if r.role == "assistant"}
    return refused


async def test_unanswered_messages_are_bounded_and_nothing_accepted_is_lost(
    stack: Stack, admin: Admin, token: str
) -> None:
    async with connect(_url(stack, token)) as ws:
        conversation, finals = await _twenty_at_once(ws)
    _bounded_and_stored(admin, conversation, finals)


def _straight_to_omni2(admin: Admin, jwt_secret: str) -> list[tuple[str, str]]:
    """Headers of a fresh user's connection straight to OMNI2 (what ForwardAuth would send)."""
    user = new_user(admin)
    return [("Authorization", f"Bearer {issue_token(user, jwt_secret)}"), ("x-user-id", user)]


async def test_a_frame_flood_straight_to_omni2_is_refused_then_closed_and_bounded(
    stack: Stack, omni_traces: TraceFetcher, admin: Admin, jwt_secret: str
) -> None:
    codes: list[str] = []
    started = time.monotonic()
    headers = _straight_to_omni2(admin, jwt_secret)
    async with connect(stack.info.omni2_ws_url, additional_headers=headers) as ws:
        welcome = json.loads(await ws.recv())
        with pytest.raises(ConnectionClosed) as closed:
            for _ in range(2000):
                await ws.send("not json")  # each one answered costs a span and a row
            while True:
                codes.append(json.loads(await asyncio.wait_for(ws.recv(), 10))["code"])
    elapsed = time.monotonic() - started
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == CloseCode.POLICY_VIOLATION
    assert "too many frames" in closed.value.rcvd.reason
    assert "rate_limited" in codes and set(codes) <= {"invalid_json", "rate_limited"}
    assert len(codes) < 1000
    conversation = welcome["conversation_id"]
    row = await _rate_refusal(admin, conversation)
    # A row per frame the rate let through (a burst of 40, then 20 a second), not per frame.
    assert len(_flow_events(admin, conversation, Flow.FRAME)) <= 40 + 20 * elapsed + 2
    spans = _refused_under_connect(omni_traces, row.trace_id, Service.OMNI2)
    spans.assert_attribute(
        f"{Service.OMNI2}:{SpanName.REFUSED}", Attr.CLOSE_CODE, int(CloseCode.POLICY_VIOLATION)
    )


async def test_unanswered_messages_straight_to_omni2_are_bounded_and_the_rest_answered(
    stack: Stack, admin: Admin, jwt_secret: str
) -> None:
    headers = _straight_to_omni2(admin, jwt_secret)
    async with connect(stack.info.omni2_ws_url, additional_headers=headers) as ws:
        conversation, finals = await _twenty_at_once(ws)
    refused = _bounded_and_stored(admin, conversation, finals)
    events = admin(lambda s: flow_repo.flow_events(s, conversation_id=conversation))
    assert sorted(e.trace_id for e in events if e.name == "too_many_pending") == sorted(
        f["trace_id"] for f in refused
    )


async def test_origins_other_than_the_chat_page_are_refused(stack: Stack, token: str) -> None:
    async with connect(_url(stack, token), origin="http://evil.example") as ws:  # type: ignore[arg-type]
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()
    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (
        CloseCode.FORBIDDEN,
        "origin not allowed",
    )
    async with connect(_url(stack, token), origin=stack.info.frontend_url) as ws:  # type: ignore[arg-type]
        assert json.loads(await ws.recv())["type"] == "welcome"
    for origin, allowed in (("http://evil.example", False), (stack.info.frontend_url, True)):
        headers = {"Origin": origin, "Access-Control-Request-Method": "POST"}
        for url in (
            f"{stack.info.dashboard_url}/api/login",
            f"{stack.info.otlp_http_endpoint}/v1/traces",
        ):
            answer = httpx.options(url, headers=headers)
            assert (answer.headers.get("access-control-allow-origin") == origin) is allowed, url


async def test_a_percent_encoded_token_name_reaches_no_log_and_no_span(
    stack: Stack, omni_traces: TraceFetcher, token: str
) -> None:
    session_trace, session_span = _ids()
    traceparent = f"00-{session_trace}-{session_span}-01"
    # The name and the value's first letter percent-encoded: neither `token=` nor `eyJ` shows.
    url = f"{stack.info.dashboard_ws_url}?tok%65n=%65{token[1:]}&traceparent={traceparent}"
    async with connect(url) as ws:
        assert json.loads(await ws.recv())["type"] == "welcome"
    spans = omni_traces.wait(
        session_trace,
        has_spans_named((Service.DASHBOARD, SpanName.CONNECT)),
        what="dashboard connect",
    )
    exported = json.dumps([s.attributes for s in spans])
    signature = token.rsplit(".", 1)[1]
    assert token not in exported and signature not in exported
    logs = "".join(p.read_text(errors="replace") for p in stack.logs_dir.glob("*.log"))
    assert token not in logs and signature not in logs


def test_run_directory_stack_file_and_database_are_private(stack: Stack) -> None:
    assert stack.run_dir.stat().st_mode & 0o777 == 0o700
    database = Path(stack.info.omni2_database_url.split(":///", 1)[1])
    for path in (database, *stack.logs_dir.glob("*.log")):
        assert path.stat().st_mode & 0o077 == 0, path


NASTY = [
    "[" * 10_000,
    '{"type": "message", "text": "hi", "trace": ' + "{" * 5_000,
    '{"type": "message", "text": "hi", "trace": {"traceparent": "00-'
    + "f" * 32
    + "-"
    + "f" * 16
    + '-00"}}',
    '{"type": "message", "text": "hi", "trace": {"traceparent": "' + "x" * 4000 + '"}}',
    '{"type": "message", "text": "hi", "trace": {"traceparent": ["a"], "baggage": "user.id=bob"}}',
    '{"type": "message", "text": "' + "é" * 20_000 + '"}',
    '{"type": "message", "text": null}',
    '{"type": "ping", "type": "message"}',
    "\u0000\ud7ff",
    "null",
    '"just a string"',
    "1e999999",
]


async def test_the_nastiest_frames_leave_every_service_alive(stack: Stack, token: str) -> None:
    async with connect(_url(stack, token)) as ws:
        json.loads(await ws.recv())
        for frame in NASTY:
            await ws.send(frame)
            answer = await _final(ws)
            assert answer["type"] in ("error", "done"), (frame[:40], answer)
        await ws.send(b"\x00\x01binary")
        assert (await _final(ws))["code"] == "binary_frame"
        assert (await _message(ws))["type"] == "done"
    assert stack.dead_services() == []
    for url in (stack.info.dashboard_url, stack.info.omni2_url, stack.info.auth_url):
        assert httpx.get(f"{url}/healthz").status_code == 200
