"""Users from OMNI2's database: refusals at connect, per-message limits, blocking, the audit."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from starlette.websockets import WebSocketDisconnect

from otel.names import Attr, Event, Flow, SpanName
from services.common.protocol import CloseCode
from services.db import Database
from services.db.repository import conversations as conversations_repo
from services.db.repository import flow as flow_repo
from services.db.repository import usage as usage_repo
from services.db.repository import users as users_repo
from services.db.seed import DEMO_USERS, write_demo_users
from tests.db import Admin
from tests.services.omni2.conftest import converse, gateway_headers

SECRET = "k" * 32  # services refuse a shorter one


def close_of(client: TestClient, user: str) -> WebSocketDisconnect:
    with (
        client.websocket_connect("/ws/chat", headers=gateway_headers(user)) as ws,
        pytest.raises(WebSocketDisconnect) as err,
    ):
        ws.receive_json()
    return err.value


@pytest.mark.parametrize(
    ("user", "code", "reason", "error_type"),
    [
        ("nobody", CloseCode.USER_UNKNOWN, "unknown user 'nobody'", "unknown_user"),
        ("ivan", CloseCode.FORBIDDEN, "account inactive", "user_inactive"),
        ("mallory", CloseCode.USER_BLOCKED, "user blocked: abusive prompts", "user_blocked"),
    ],
)
def test_connect_refusals_have_codes_reasons_spans_and_flow_events(
    make_client: Callable[..., TestClient],
    admin: Admin,
    spans: InMemorySpanExporter,
    user: str,
    code: int,
    reason: str,
    error_type: str,
) -> None:
    closed = close_of(make_client(), user)
    assert closed.code == code
    assert closed.reason.startswith(reason)
    finished = spans.get_finished_spans()
    (connect,) = [s for s in finished if s.name == SpanName.CONNECT]
    (checks,) = [s for s in finished if s.name == SpanName.CHECKS]
    assert connect.attributes is not None and checks.attributes is not None
    assert connect.attributes[Attr.ERROR_TYPE] == error_type
    assert connect.attributes[Attr.CLOSE_CODE] == code
    assert checks.parent is not None and checks.parent.span_id == connect.context.span_id
    assert checks.attributes[Attr.CHECK_RESULT] == "deny"
    assert checks.attributes[Attr.CHECK_NAME] == "user"
    assert checks.attributes[Attr.ERROR_TYPE] == error_type
    assert checks.attributes[Attr.USER_ID] == user
    assert checks.status.status_code is StatusCode.ERROR
    assert (checks.status.description or "").startswith(reason)
    (event,) = checks.events
    assert event.name == Event.check("user") and event.attributes is not None
    assert event.attributes[Attr.CHECK_RESULT] == "deny"
    assert event.attributes[Attr.ERROR_TYPE] == error_type
    events = admin(lambda s: flow_repo.flow_events(s))
    assert [(e.kind, e.status, e.user_id) for e in events] == [
        (Flow.CHECK, "denied", user),
        (Flow.CONNECT, "denied", user),
    ]
    assert events[0].trace_id == f"{connect.context.trace_id:032x}"
    assert events[0].span_id == f"{checks.context.span_id:016x}"
    assert events[0].detail["error_type"] == error_type
    assert events[0].detail["reason"].startswith(reason)


def _message_spans(spans: InMemorySpanExporter, trace_id: str) -> list[ReadableSpan]:
    return [
        s
        for s in spans.get_finished_spans()
        if s.context is not None and f"{s.context.trace_id:032x}" == trace_id
    ]


def test_a_passing_message_has_one_checks_span_with_an_event_per_check(
    make_client: Callable[..., TestClient], admin: Admin, spans: InMemorySpanExporter
) -> None:
    client = make_client()
    admin(lambda s: users_repo.set_limits(s, "tim", rate_per_minute=10))  # tim: 120 tokens a day
    with client.websocket_connect("/ws/chat", headers=gateway_headers("tim")) as ws:
        welcome = ws.receive_json()
        done = converse(ws, "hello")[1][-1]
    assert done["type"] == "done"
    message = _message_spans(spans, done["trace_id"])
    (turn,) = [s for s in message if s.name == SpanName.TURN]
    (checks,) = [s for s in message if s.name == SpanName.CHECKS]
    assert checks.parent is not None and checks.parent.span_id == turn.context.span_id
    assert checks.status.status_code is StatusCode.UNSET
    assert dict(checks.attributes or {}) == {
        Attr.CONVERSATION_ID: welcome["conversation_id"],
        Attr.USER_ID: "tim",
        Attr.CHECK_RESULT: "pass",
    }
    assert [e.name for e in checks.events] == [
        Event.check("user"),
        Event.check("rate_limit"),
        Event.check("usage"),
    ]
    user, rate, usage = (dict(e.attributes or {}) for e in checks.events)
    assert checks.start_time is not None and checks.end_time is not None
    times = [e.timestamp for e in checks.events]
    assert checks.start_time <= times[0] <= times[1] <= times[2] <= checks.end_time
    assert user[Attr.CHECK_NAME] == "user" and user[Attr.USER_ROLE] == "user"
    # Each check keeps its own chat.limit: the rate per minute, the tokens per day.
    assert (rate[Attr.CHECK_NAME], rate[Attr.LIMIT], rate[Attr.LIMIT_USED]) == ("rate_limit", 10, 0)
    assert (usage[Attr.CHECK_NAME], usage[Attr.LIMIT], usage[Attr.LIMIT_USED]) == ("usage", 120, 0)
    assert usage[Attr.LIMIT_RESERVED] == 0 and usage[Attr.USAGE_COST] == 0
    assert all(a[Attr.CHECK_RESULT] == "pass" for a in (user, rate, usage))
    assert not any(Attr.ERROR_TYPE in a for a in (user, rate, usage))
    # One flow event per check, each naming the checks span and timed as its event.
    flow = admin(lambda s: flow_repo.flow_events(s, trace_id=done["trace_id"]))
    checked = [e for e in flow if e.kind == Flow.CHECK]
    assert [(e.name, e.status) for e in checked] == [
        ("user", "ok"),
        ("rate_limit", "ok"),
        ("usage", "ok"),
    ]
    assert {e.span_id for e in checked} == {f"{checks.context.span_id:016x}"}
    assert [e.duration_ms for e in checked] == pytest.approx(
        [a[Attr.CHECK_DURATION] for a in (user, rate, usage)]
    )


def test_a_tool_free_message_is_four_spans_in_omni2(
    make_client: Callable[..., TestClient], spans: InMemorySpanExporter
) -> None:
    client = make_client()
    with client.websocket_connect("/ws/chat", headers=gateway_headers("alice")) as ws:
        ws.receive_json()
        done = converse(ws, "hello")[1][-1]
    assert done["type"] == "done" and done["result"]["tool_calls"] == 0
    message = _message_spans(spans, done["trace_id"])
    by_name = {s.name: s for s in message}
    model = SpanName.model_call("omni2-offline-1")
    assert len(message) == 4, [s.name for s in message]
    assert set(by_name) == {SpanName.TURN, SpanName.CHECKS, model, SpanName.PERSIST}
    turn = by_name[SpanName.TURN]
    assert turn.parent is None, "no client context: chat.turn roots the message trace"
    for child in (SpanName.CHECKS, model, SpanName.PERSIST):
        parent = by_name[child].parent
        assert parent is not None and parent.span_id == turn.context.span_id, child
    assert [e.name for e in by_name[SpanName.CHECKS].events] == [
        Event.check("user"),
        Event.check("rate_limit"),
        Event.check("usage"),
    ]
    order = sorted(message, key=lambda s: s.start_time or 0)
    assert [s.name for s in order] == [SpanName.TURN, SpanName.CHECKS, model, SpanName.PERSIST]


def test_rate_limit_refuses_a_burst_and_the_connection_stays_open(
    make_client: Callable[..., TestClient], admin: Admin
) -> None:
    client = make_client()
    admin(lambda s: users_repo.set_limits(s, "carol", rate_per_minute=3))
    with client.websocket_connect("/ws/chat", headers=gateway_headers("carol")) as ws:
        ws.receive_json()
        finals = [converse(ws, f"message {i}")[1][-1] for i in range(5)]
        ws.send_json({"type": "ping"})
        assert ws.receive_json() == {"type": "pong"}
    assert [f["type"] for f in finals] == ["done", "done", "done", "error", "error"]
    assert finals[3]["error"].startswith("Rate limit exceeded")
    assert finals[3]["code"] == "rate_limited"


def test_usage_accumulates_until_the_daily_limit_refuses(
    make_client: Callable[..., TestClient], admin: Admin
) -> None:
    client = make_client()
    with client.websocket_connect("/ws/chat", headers=gateway_headers("tim")) as ws:
        ws.receive_json()
        used, finals = [], []
        for i in range(10):
            _, frames = converse(ws, f"tell me something, number {i}")
            finals.append(frames[-1])
            if frames[-1]["type"] == "error":
                break
            used.append(frames[-1]["result"]["tokens_used"])
    refused = finals[-1]
    assert refused["type"] == "error" and refused["code"] == "daily_limit_exceeded"
    assert refused["error"].startswith("Daily limit exceeded")
    assert len(used) >= 2, "several messages fit before the limit"
    assert sum(used) >= 120 > sum(used[:-1])
    tokens, _ = admin(lambda s: usage_repo.usage_since(s, "tim", usage_repo.start_of_day()))
    assert tokens == sum(used)


def test_close_to_the_limit_a_warning_frame_precedes_the_answer(
    make_client: Callable[..., TestClient], admin: Admin
) -> None:
    client = make_client()
    with client.websocket_connect("/ws/chat", headers=gateway_headers("alice")) as ws:
        ws.receive_json()
        used = converse(ws, "hello")[1][-1]["result"]["tokens_used"]
        admin(lambda s: users_repo.set_limits(s, "alice", daily_tokens=used + 1))
        _, frames = converse(ws, "hello again")
    assert next(f["type"] for f in frames) == "warning"
    assert frames[0]["warning"] == f"You have used {used} of your {used + 1} daily tokens"
    assert frames[-1]["type"] == "done"


def test_user_blocked_while_connected_gets_a_blocked_frame_then_a_close(
    make_client: Callable[..., TestClient], admin: Admin
) -> None:
    client = make_client()
    with client.websocket_connect("/ws/chat", headers=gateway_headers("alice")) as ws:
        ws.receive_json()
        assert converse(ws, "hello")[1][-1]["type"] == "done"
        admin(lambda s: users_repo.block_user(s, "alice", "too many refunds", by="test"))
        _, frames = converse(ws, "hello again")
        assert frames[-1]["type"] == "blocked"
        assert frames[-1]["error"] == "user blocked: too many refunds"
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
    assert closed.value.code == CloseCode.USER_BLOCKED
    admin(lambda s: users_repo.unblock_user(s, "alice"))
    with client.websocket_connect("/ws/chat", headers=gateway_headers("alice")) as ws:
        assert ws.receive_json()["type"] == "welcome"


def test_every_row_of_a_message_carries_its_trace_id(
    make_client: Callable[..., TestClient], admin: Admin
) -> None:
    client = make_client()
    with client.websocket_connect("/ws/chat", headers=gateway_headers("alice")) as ws:
        conversation = ws.receive_json()["conversation_id"]
        first = converse(ws, "hello")[1][-1]
        second = converse(ws, "and again")[1][-1]
    messages = admin(lambda s: conversations_repo.conversation_messages(s, conversation))
    assert [(m.role, m.trace_id) for m in messages] == [
        ("user", first["trace_id"]),
        ("assistant", first["trace_id"]),
        ("user", second["trace_id"]),
        ("assistant", second["trace_id"]),
    ]
    usage = admin(lambda s: usage_repo.usage_rows(s, conversation))
    assert [(u.trace_id, u.tokens_input, u.tokens_output) for u in usage] == [
        (f["trace_id"], f["result"]["tokens_input"], f["result"]["tokens_output"])
        for f in (first, second)
    ]
    assert all(u.cost > 0 for u in usage)
    events = admin(lambda s: flow_repo.flow_events(s, trace_id=second["trace_id"]))
    assert [(e.kind, e.name, e.status) for e in events] == [
        (Flow.CHECK, "user", "ok"),
        (Flow.CHECK, "rate_limit", "ok"),
        (Flow.CHECK, "usage", "ok"),
        (Flow.MODEL_CALL, "omni2-offline-1", "ok"),
    ]
    assert all(e.span_id and e.duration_ms is not None for e in events)


def test_history_comes_from_the_database(make_client: Callable[..., TestClient]) -> None:
    client = make_client(history_turns=1)
    with client.websocket_connect("/ws/chat", headers=gateway_headers("alice")) as ws:
        ws.receive_json()
        replies = [converse(ws, text)[0] for text in ("one", "two", "three")]
    assert "start of our conversation" in replies[0]
    assert "1 earlier message" in replies[1]
    assert "1 earlier message" in replies[2], "history is bounded by history_turns"


def test_database_gone_gives_reasons_not_crashes(
    make_client: Callable[..., TestClient], database_url: str, spans: InMemorySpanExporter
) -> None:
    client = make_client()
    with client.websocket_connect("/ws/chat", headers=gateway_headers("alice")) as ws:
        ws.receive_json()
        asyncio.run(_break(database_url))
        _, frames = converse(ws, "hello")
    assert frames[-1]["code"] == "database_unavailable"
    assert frames[-1]["error"] == "Service unavailable: OMNI2 cannot reach its database"
    closed = close_of(client, "alice")
    assert closed.code == CloseCode.INTERNAL_ERROR
    assert closed.reason == "service unavailable: OMNI2 cannot reach its database"


async def _break(url: str) -> None:
    """Drop OMNI2's tables, as a database that lost its schema would."""
    db = Database(url)
    await db.drop_tables()
    await db.dispose()


def test_daily_cost_limit_refuses_too(make_client: Callable[..., TestClient], admin: Admin) -> None:
    client = make_client(price_output_per_mtok=1000.0)  # $0.001 a token
    admin(lambda s: users_repo.set_limits(s, "carol", daily_cost=0.01))
    with client.websocket_connect("/ws/chat", headers=gateway_headers("carol")) as ws:
        ws.receive_json()
        first = converse(ws, "hello")[1][-1]
        refused = converse(ws, "hello again")[1][-1]
    spent = first["result"]["cost"]
    assert spent >= 0.01
    assert refused["code"] == "daily_limit_exceeded"
    assert refused["error"] == f"Daily limit exceeded: ${spent:.2f} of $0.01 spent today"


def test_providers_come_from_settings_and_keys_stay_secret() -> None:
    from pydantic import SecretStr

    from services.omni2.providers import create_model
    from services.omni2.providers.anthropic import AnthropicModel
    from services.omni2.providers.openai import OpenAICompatibleModel
    from services.omni2.settings import Omni2Settings

    key = "sk-ant-secret-value-123"
    settings = Omni2Settings(  # type: ignore[call-arg]
        OMNI_JWT_SECRET=SECRET,
        model_provider="anthropic",
        model_name="claude-x",
        anthropic_api_key=SecretStr(key),
    )
    assert isinstance(create_model(settings), AnthropicModel)
    assert key not in repr(settings) and key not in str(settings.model_dump())
    settings = Omni2Settings(  # type: ignore[call-arg]
        OMNI_JWT_SECRET=SECRET, model_provider="openai", openai_base_url="http://127.0.0.1:11434/v1"
    )
    model = create_model(settings)
    assert isinstance(model, OpenAICompatibleModel) and model.provider == "openai"
    with pytest.raises(ValueError, match="unknown model provider 'nope'"):
        create_model(Omni2Settings(OMNI_JWT_SECRET=SECRET, model_provider="nope"))  # type: ignore[call-arg]


def test_the_demo_users_file_is_private_and_lists_every_demo_login(tmp_path: Path) -> None:
    path = tmp_path / "run" / "demo-users.json"
    write_demo_users(path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert json.loads(path.read_text()) == {d.id: d.password for d in DEMO_USERS}
