"""OMNI2 in process: gateway identity, the turn's spans and links, malformed frames."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from starlette.websockets import WebSocketDisconnect

from otel.names import Attr, ClientContext, Entry, Event, LinkRole, SpanName
from services.common.protocol import CloseCode
from services.common.provenance import DASHBOARD_KEY_HEADER, EDGE_KEY_HEADER
from services.common.tokens import issue_token
from services.omni2.app import create_app
from services.omni2.settings import Omni2Settings
from tests.conftest import DASHBOARD_KEY, EDGE_KEY

SECRET = "test-secret-0123456789abcdef0123456789"
GATEWAY_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
GATEWAY_SPAN = "00f067aa0ba902b7"
FRAME_TRACE = "0af7651916cd43dd8448eb211c80319c"
FRAME_SPAN = "b7ad6b7169203331"


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    settings = Omni2Settings(  # type: ignore[call-arg]
        OMNI_JWT_SECRET=SECRET,
        model_token_delay_ms=0,
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'omni2.db'}",
    )
    with TestClient(create_app(settings)) as client:
        yield client


def gateway_headers(
    user: str = "alice", token_user: str | None = None, flags: str = "01"
) -> dict[str, str]:
    """What Traefik delivers of a dashboard's handshake: identity, the dashboard's key."""
    return {
        "x-user-id": user,
        "authorization": f"Bearer {issue_token(token_user or user, SECRET)}",
        "traceparent": f"00-{GATEWAY_TRACE}-{GATEWAY_SPAN}-{flags}",
        DASHBOARD_KEY_HEADER: DASHBOARD_KEY,
    }


def refusal(client: TestClient, headers: dict[str, str]) -> WebSocketDisconnect:
    with (
        client.websocket_connect("/ws/chat", headers=headers) as ws,
        pytest.raises(WebSocketDisconnect) as err,
    ):
        ws.receive_json()
    return err.value


def test_refuses_connection_without_gateway_identity(client: TestClient) -> None:
    closed = refusal(client, {"x-user-id": "alice"})
    assert closed.code == CloseCode.FORBIDDEN
    assert "gateway" in closed.reason


def test_refuses_identity_header_that_disagrees_with_token(client: TestClient) -> None:
    closed = refusal(client, gateway_headers(user="alice", token_user="bob"))
    assert closed.code == CloseCode.FORBIDDEN
    assert "does not match" in closed.reason


def test_refusal_is_traced(client: TestClient, spans: InMemorySpanExporter) -> None:
    refusal(client, {"x-user-id": "alice"})
    (connect,) = [s for s in spans.get_finished_spans() if s.name == SpanName.CONNECT]
    assert connect.attributes is not None
    assert connect.attributes[Attr.ERROR_TYPE] == "not_via_gateway"
    assert connect.attributes[Attr.CLOSE_CODE] == CloseCode.FORBIDDEN


def test_turn_continues_frame_context_and_links_to_gateway(
    client: TestClient, spans: InMemorySpanExporter
) -> None:
    with client.websocket_connect("/ws/chat", headers=gateway_headers()) as ws:
        welcome = ws.receive_json()
        assert welcome["type"] == "welcome"
        assert welcome["user_id"] == "alice"
        ws.send_json(
            {
                "type": "message",
                "text": "hello",
                "trace": {"traceparent": f"00-{FRAME_TRACE}-{FRAME_SPAN}-01"},
            }
        )
        frames = []
        while (frame := ws.receive_json())["type"] == "token":
            frames.append(frame)
    assert frames, "no token frames streamed"
    assert frame["type"] == "done"
    assert frame["trace_id"] == FRAME_TRACE
    assert frame["result"]["tokens_used"] == (
        frame["result"]["tokens_input"] + frame["result"]["tokens_output"]
    )

    finished = {s.name: s for s in spans.get_finished_spans()}
    turn = finished[SpanName.TURN]
    assert [e.name for e in turn.events] == [Event.FIRST_TOKEN]
    connect = finished[SpanName.CONNECT]
    assert turn.parent is not None and f"{turn.parent.span_id:016x}" == FRAME_SPAN
    assert turn.kind is SpanKind.SERVER
    (link,) = turn.links
    assert f"{link.context.span_id:016x}" == GATEWAY_SPAN
    assert link.attributes == {Attr.LINK_ROLE: LinkRole.GATEWAY}
    assert connect.parent is not None and f"{connect.parent.span_id:016x}" == GATEWAY_SPAN
    assert turn.attributes is not None
    assert turn.attributes[Attr.CONVERSATION_ID] == welcome["conversation_id"]
    assert turn.attributes[Attr.USER_ID] == "alice"

    model = finished[SpanName.model_call("omni2-offline-1")]
    assert model.parent is not None and model.parent.span_id == turn.context.span_id
    assert model.attributes is not None
    assert model.attributes[Attr.GEN_AI_PROVIDER] == "offline"
    assert model.attributes[Attr.GEN_AI_OUTPUT_TOKENS] == frame["result"]["tokens_output"]
    assert Attr.TIME_TO_FIRST_CHUNK in model.attributes


def test_second_turn_sees_history(client: TestClient) -> None:
    with client.websocket_connect("/ws/chat", headers=gateway_headers()) as ws:
        ws.receive_json()
        replies = []
        for text in ("one", "two"):
            ws.send_json({"type": "message", "text": text})
            reply = ""
            while (frame := ws.receive_json())["type"] == "token":
                reply += frame["text"]
            replies.append(reply)
    assert "start of our conversation" in replies[0]
    assert "1 earlier message" in replies[1]


def test_malformed_frames_get_errors_and_connection_stays_usable(
    client: TestClient, spans: InMemorySpanExporter
) -> None:
    with client.websocket_connect("/ws/chat", headers=gateway_headers()) as ws:
        ws.receive_json()
        answers = []
        for send in (
            lambda: ws.send_text("not json"),
            lambda: ws.send_bytes(b"\x00\x01"),
            lambda: ws.send_json({"type": "bogus"}),
            lambda: ws.send_json({"type": "message"}),
        ):
            send()
            frame = ws.receive_json()
            assert frame["type"] == "error"
            assert frame["error"]
            assert len(frame["trace_id"]) == 32
            answers.append(frame)
        ws.send_json({"type": "ping"})
        assert ws.receive_json() == {"type": "pong"}
        ws.send_json({"type": "message", "text": "still there?"})
        while (frame := ws.receive_json())["type"] == "token":
            pass
        assert frame["type"] == "done"
    finished = spans.get_finished_spans()
    (connect,) = [s for s in finished if s.name == SpanName.CONNECT]
    rejects = [s for s in finished if s.name == SpanName.REJECT]
    assert len(rejects) == 4
    # No trace per malformed frame: each is a child of chat.connect in the session trace.
    session = connect.context.trace_id
    assert {a["trace_id"] for a in answers} == {f"{session:032x}"}
    assert all(
        r.parent is not None
        and r.parent.span_id == connect.context.span_id
        and r.status.status_code.name == "ERROR"
        and r.attributes is not None
        and r.attributes[Attr.ERROR_TYPE] == a["code"]
        for r, a in zip(rejects, answers, strict=True)
    )
    assert not [
        s for s in finished if s.name == SpanName.TURN and s.status.status_code.name == "ERROR"
    ]


def test_a_malformed_frame_with_its_own_trace_context_is_a_refused_turn_of_that_trace(
    client: TestClient, spans: InMemorySpanExporter
) -> None:
    with client.websocket_connect("/ws/chat", headers=gateway_headers()) as ws:
        ws.receive_json()
        ws.send_json(
            {"type": "message", "trace": {"traceparent": f"00-{FRAME_TRACE}-{FRAME_SPAN}-01"}}
        )
        frame = ws.receive_json()
    assert (frame["type"], frame["code"], frame["trace_id"]) == (
        "error",
        "missing_text",
        FRAME_TRACE,
    )
    (turn,) = [s for s in spans.get_finished_spans() if s.name == SpanName.TURN]
    assert turn.parent is not None and f"{turn.parent.span_id:016x}" == FRAME_SPAN
    assert turn.attributes is not None and turn.attributes[Attr.ERROR_TYPE] == "missing_text"


def _one_message(client: TestClient, headers: dict[str, str], flags: str = "00") -> dict:  # type: ignore[type-arg]
    with client.websocket_connect("/ws/chat", headers=headers) as ws:
        ws.receive_json()
        traceparent = f"00-{FRAME_TRACE}-{FRAME_SPAN}-{flags}"
        ws.send_json({"type": "message", "text": "hi", "trace": {"traceparent": traceparent}})
        while (frame := ws.receive_json())["type"] == "token":
            pass
    return dict(frame)


def test_through_a_dashboard_its_decision_holds(
    client: TestClient, spans: InMemorySpanExporter
) -> None:
    # The dashboard sampled this connection out: its `-00` came through Traefik, with its key.
    assert _one_message(client, gateway_headers(flags="00"))["type"] == "done"
    assert not [
        s for s in spans.get_finished_spans() if s.name in (SpanName.CONNECT, SpanName.TURN)
    ]


@pytest.mark.parametrize(
    ("key", "entry"),
    [
        ({EDGE_KEY_HEADER: EDGE_KEY}, Entry.GATEWAY),
        ({}, Entry.DIRECT),
        ({DASHBOARD_KEY_HEADER: "x" * 32}, Entry.DIRECT),
    ],
)
def test_without_a_dashboard_omni2_decides_whatever_the_flags_say(
    client: TestClient, spans: InMemorySpanExporter, key: dict[str, str], entry: str
) -> None:
    headers = {k: v for k, v in gateway_headers(flags="00").items() if k != DASHBOARD_KEY_HEADER}
    done = _one_message(client, headers | key, flags="00")
    assert done["type"] == "done" and done["trace_id"] == FRAME_TRACE
    finished = {s.name: s for s in spans.get_finished_spans()}
    connect, turn = finished[SpanName.CONNECT], finished[SpanName.TURN]
    assert connect.context.trace_flags.sampled and turn.context.trace_flags.sampled
    assert connect.attributes is not None and connect.attributes[Attr.ENTRY] == entry
    assert turn.attributes is not None and turn.attributes[Attr.ENTRY] == entry
    # OMNI2 is the first hop of the frames: it records what the client's context was.
    assert turn.attributes[Attr.CLIENT_CONTEXT] == ClientContext.CONTINUED
    assert turn.attributes[Attr.CLIENT_SAMPLED] is False
    assert turn.parent is not None and f"{turn.parent.span_id:016x}" == FRAME_SPAN
    if entry == Entry.GATEWAY:  # Traefik's span (its public entry point stripped the client's)
        (link,) = turn.links
        assert f"{link.context.span_id:016x}" == GATEWAY_SPAN
    else:  # the header's context was the client's: no gateway to link to
        assert turn.links == ()
        assert connect.attributes[Attr.CLIENT_CONTEXT] == ClientContext.CONTINUED
