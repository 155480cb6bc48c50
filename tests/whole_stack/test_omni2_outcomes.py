"""What OMNI2 decides, end to end through the real stack: the reason the client sees, and a
trace (and the audit trail) that records why."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace import TracerProvider
from websockets.exceptions import ConnectionClosed

from omni_trace.stack import Stack
from omni_trace.stack.client import ChatRefused, login, open_chat
from omni_trace.stack.demo import message_trace_complete
from omni_trace.stack.plugin import ChatFactory
from omni_trace.traces import Trace, TraceFetcher, has_spans_named
from omni_trace.traces.jaeger import TraceSpan
from otel.names import Attr, Event, Flow, Service, SpanName
from services.common.protocol import CloseCode
from services.common.tokens import issue_token
from services.db.repository import flow as flow_repo
from services.db.repository import users as users_repo
from tests.db import Admin
from tests.whole_stack.conftest import new_user

pytestmark = pytest.mark.stack


async def _refused(stack: Stack, token: str, provider: TracerProvider) -> ChatRefused:
    with pytest.raises(ChatRefused) as refused:
        async with open_chat(stack.info.dashboard_ws_url, token, tracer_provider=provider):
            pass
    return refused.value


_omni2_connect = has_spans_named(
    (Service.OMNI2, SpanName.CONNECT),
    (Service.OMNI2, SpanName.CHECKS),
    (Service.CHAT_CLIENT, SpanName.CONNECT),
)
_TURN_AND_RELAY = has_spans_named(
    (Service.OMNI2, SpanName.TURN), (Service.DASHBOARD, SpanName.RELAY)
)


@pytest.mark.parametrize(
    ("user", "code", "reason", "error_type"),
    [
        ("ghost", CloseCode.USER_UNKNOWN, "unknown user 'ghost'", "unknown_user"),
        ("ivan", CloseCode.FORBIDDEN, "account inactive", "user_inactive"),
        ("mallory", CloseCode.USER_BLOCKED, "user blocked: abusive prompts", "user_blocked"),
    ],
)
async def test_connect_refusals(
    stack: Stack,
    omni_tracer_provider: TracerProvider,
    omni_traces: TraceFetcher,
    admin: Admin,
    jwt_secret: str,
    user: str,
    code: int,
    reason: str,
    error_type: str,
) -> None:
    if user == "ghost":  # a valid token for a user OMNI2 does not know
        token = issue_token(user, jwt_secret)
    else:  # the dashboard lets them log in: the refusal is OMNI2's
        token = await login(stack.info.dashboard_url, user, f"{user}-demo")
    refused = await _refused(stack, token, omni_tracer_provider)
    assert refused.code == code
    assert refused.reason.startswith(reason)

    spans = omni_traces.wait(refused.session_trace_id, _omni2_connect, what="omni2's chat.connect")
    connect = spans.one(f"{Service.OMNI2}:{SpanName.CONNECT}")
    checks = spans.one(f"{Service.OMNI2}:{SpanName.CHECKS}")
    user_check = checks.event(Event.check("user"))
    spans.expect(
        connect.status == "ERROR"
        and connect.attributes.get(Attr.ERROR_TYPE) == error_type
        and connect.attributes.get(Attr.CLOSE_CODE) == code
        and connect.attributes.get(Attr.USER_ID) == user,
        f"omni2's chat.connect records the refusal ({error_type}, {code})",
    )
    spans.expect(
        checks.parent_span_id == connect.span_id
        and checks.status == "ERROR"
        and checks.attributes.get(Attr.CHECK_RESULT) == "deny"
        and checks.attributes.get(Attr.CHECK_NAME) == "user"
        and checks.attributes.get(Attr.ERROR_TYPE) == error_type,
        "the checks below it record that the user check denied",
    )
    spans.expect(
        checks.event_names == (Event.check("user"),)
        and user_check is not None
        and user_check.attributes.get(Attr.CHECK_RESULT) == "deny"
        and user_check.attributes.get(Attr.ERROR_TYPE) == error_type,
        "the user check's event records the denial",
    )
    client = spans.one(f"{Service.CHAT_CLIENT}:{SpanName.CONNECT}")
    spans.expect(client.attributes.get(Attr.CLOSE_CODE) == code, "the client saw the code")
    events = admin(lambda s: flow_repo.flow_events(s, trace_id=refused.session_trace_id))
    assert [(e.kind, e.status) for e in events] == [
        (Flow.CHECK, "denied"),
        (Flow.CONNECT, "denied"),
    ]
    assert events[0].span_id == checks.span_id, "the flow event names the checks span"


def _turn_denied(spans: Trace, error_type: str, check: str) -> TraceSpan:
    """The checks span of a message `check` denied with `error_type` (checked here)."""
    turn = spans.one(f"{Service.OMNI2}:{SpanName.TURN}")
    checks = spans.one(f"{Service.OMNI2}:{SpanName.CHECKS}")
    denied = checks.event(Event.check(check))
    spans.expect(
        turn.status == "ERROR" and turn.attributes.get(Attr.ERROR_TYPE) == error_type,
        f"chat.turn records {error_type}",
    )
    spans.expect(
        checks.parent_span_id == turn.span_id
        and checks.status == "ERROR"
        and checks.attributes.get(Attr.CHECK_RESULT) == "deny"
        and checks.attributes.get(Attr.CHECK_NAME) == check
        and checks.attributes.get(Attr.ERROR_TYPE) == error_type,
        f"the checks span records that check {check} denied the message",
    )
    spans.expect(
        checks.event_names[-1] == Event.check(check)
        and denied is not None
        and denied.attributes.get(Attr.CHECK_RESULT) == "deny"
        and all(e.attributes.get(Attr.CHECK_RESULT) == "pass" for e in checks.events[:-1]),
        f"the checks before {check} passed; its event, the last, denied",
    )
    spans.expect(
        not any(s.name.startswith("chat ") and s.service == Service.OMNI2 for s in spans),
        "no model call for a refused message",
    )
    relay = spans.one(f"{Service.DASHBOARD}:{SpanName.RELAY}")
    spans.expect(relay.status == "ERROR", "the relay span ends with the refusal")
    return checks


async def test_rate_limit_refuses_a_burst_and_the_chat_goes_on(
    omni_chat: ChatFactory, omni_traces: TraceFetcher, admin: Admin, jwt_secret: str
) -> None:
    user = new_user(admin, rate_per_minute=3)
    async with omni_chat(token=issue_token(user, jwt_secret)) as chat:
        replies = [await chat.send(f"burst {i}") for i in range(5)]
        pong = await chat.send_raw('{"type": "ping"}')
    assert [r.frame["type"] for r in replies] == ["done", "done", "done", "error", "error"]
    refused = replies[3]
    assert refused.error == "Rate limit exceeded: 3 messages per minute"
    assert refused.frame["code"] == "rate_limited"
    assert pong == {"type": "pong"}, "the connection stays open"
    spans = omni_traces.wait(refused.trace_id, _TURN_AND_RELAY, what="the refusal")
    checks = _turn_denied(spans, "rate_limited", "rate_limit")
    rate = checks.event(Event.check("rate_limit"))
    spans.expect(
        rate is not None
        and rate.attributes.get(Attr.LIMIT) == 3
        and rate.attributes.get(Attr.LIMIT_USED) == 3,
        "the rate limit's event records the limit and the messages in the window",
    )
    events = admin(lambda s: flow_repo.flow_events(s, trace_id=refused.trace_id))
    assert [(e.name, e.status) for e in events] == [("user", "ok"), ("rate_limit", "denied")]
    assert {e.span_id for e in events} == {checks.span_id}


async def test_usage_accumulates_until_the_daily_limit_refuses(
    omni_chat: ChatFactory, omni_traces: TraceFetcher, admin: Admin, jwt_secret: str
) -> None:
    user = new_user(admin, daily_tokens=150)
    used: list[int] = []
    async with omni_chat(token=issue_token(user, jwt_secret)) as chat:
        for i in range(10):
            reply = await chat.send(f"tell me something, number {i}")
            if not reply.ok:
                break
            used.append(reply.frame["result"]["tokens_used"])
        assert (await chat.send_raw('{"type": "ping"}')) == {"type": "pong"}
    assert reply.frame["code"] == "daily_limit_exceeded", reply.frame
    assert reply.error == f"Daily limit exceeded: {sum(used)} of 150 tokens used today"
    assert len(used) >= 2 and sum(used[:-1]) < 150 <= sum(used)
    spans = omni_traces.wait(reply.trace_id, _TURN_AND_RELAY, what="the refusal")
    checks = _turn_denied(spans, "daily_limit_exceeded", "usage")
    usage = checks.event(Event.check("usage"))
    spans.expect(
        usage is not None
        and usage.attributes.get(Attr.LIMIT) == 150
        and usage.attributes.get(Attr.LIMIT_USED) == sum(used),
        "the usage check's event records the limit and what was used",
    )
    spans.expect(
        checks.status_message == reply.error,
        "the checks span's status is the reason the client saw",
    )


async def test_user_blocked_while_connected_gets_blocked_then_a_close(
    stack: Stack,
    omni_tracer_provider: TracerProvider,
    omni_chat: ChatFactory,
    omni_traces: TraceFetcher,
    admin: Admin,
    jwt_secret: str,
) -> None:
    user = new_user(admin)
    token = issue_token(user, jwt_secret)
    async with omni_chat(token=token) as chat:
        assert (await chat.send("hello")).ok
        admin(lambda s: users_repo.block_user(s, user, "suspicious activity", by="test"))
        blocked = await chat.send("hello again")
        with pytest.raises(ConnectionClosed) as closed:
            await chat.connection.recv()
    assert blocked.frame["type"] == "blocked"
    assert blocked.error == "user blocked: suspicious activity"
    rcvd = closed.value.rcvd
    assert rcvd is not None and rcvd.code == CloseCode.USER_BLOCKED, rcvd
    assert rcvd.reason == "user blocked: suspicious activity"
    spans = omni_traces.wait(blocked.trace_id, _TURN_AND_RELAY, what="the block")
    _turn_denied(spans, "user_blocked", "user")
    turn = spans.one(f"{Service.OMNI2}:{SpanName.TURN}")
    spans.expect(
        turn.attributes.get(Attr.CLOSE_CODE) == CloseCode.USER_BLOCKED,
        "chat.turn records the close",
    )
    # ... and a new connection is refused at connect.
    refused = await _refused(stack, token, omni_tracer_provider)
    assert refused.code == CloseCode.USER_BLOCKED


def _tool_trace_complete(spans: list[TraceSpan]) -> bool:
    return message_trace_complete(spans) and has_spans_named(
        (Service.MCP_TOOLS, SpanName.mcp("tools/call", "database_query")),
        (Service.OMNI2, SpanName.mcp("tools/call", "database_query")),
        (Service.OMNI2, SpanName.execute_tool("database_query")),
        (Service.OMNI2, SpanName.TURN),
    )(spans)


async def test_tool_calling_message_is_one_trace_down_to_the_mcp_server(
    omni_chat: ChatFactory, omni_traces: TraceFetcher
) -> None:
    async with omni_chat("bob") as chat:
        first = await chat.send("How many products per category are in the database?")
        second = await chat.send("Thanks!")
    assert first.ok and second.ok, (first.frame, second.frame)
    result = first.frame["result"]
    assert result["tools_used"] == ["database_query"] and result["tool_calls"] == 1
    assert "The database_query tool returned" in first.text and "observability" in first.text
    assert "1 earlier message" in second.text, "history reaches the model on the second turn"

    spans = omni_traces.wait(first.trace_id, _tool_trace_complete, what="client to mcp-tools spans")
    turn = spans.one(f"{Service.OMNI2}:{SpanName.TURN}")
    models = [s for s in spans if s.name == SpanName.model_call("omni2-offline-1")]
    tool = spans.one(f"{Service.OMNI2}:{SpanName.execute_tool('database_query')}")
    mcp_client = spans.one(f"{Service.OMNI2}:{SpanName.mcp('tools/call', 'database_query')}")
    mcp_server = spans.one(f"{Service.MCP_TOOLS}:{SpanName.mcp('tools/call', 'database_query')}")
    spans.expect(
        len(models) == 2 and all(m.parent_span_id == turn.span_id for m in models),
        "two model calls (tool request, answer) below chat.turn",
    )
    spans.expect(
        models[0].attributes.get(Attr.GEN_AI_FINISH_REASONS) == ["tool_calls"]
        and models[1].attributes.get(Attr.GEN_AI_FINISH_REASONS) == ["stop"],
        "the first model call asked for tools, the second answered",
    )
    spans.expect(tool.parent_span_id == turn.span_id, "execute_tool < chat.turn")
    spans.expect(
        tool.attributes.get(Attr.GEN_AI_TOOL_NAME) == "database_query"
        and str(tool.attributes.get(Attr.GEN_AI_TOOL_CALL_ID, "")).startswith("call_")
        and tool.attributes.get(Attr.TOOL_STATUS) == "ok",
        "execute_tool carries the tool name, call id and status",
    )
    spans.expect(
        mcp_client.parent_span_id == tool.span_id
        and mcp_client.kind == "CLIENT"
        and mcp_client.attributes.get(Attr.MCP_METHOD) == "tools/call",
        "MCP client span < execute_tool",
    )
    spans.expect(
        mcp_server.parent_span_id == mcp_client.span_id and mcp_server.kind == "SERVER",
        "mcp-tools server span < MCP client span (context from params._meta)",
    )
    missing = [
        (s.service, s.name)
        for s in spans
        if s.attributes.get(Attr.CONVERSATION_ID) != chat.conversation_id
    ]
    spans.expect(not missing, f"every span carries the conversation id; not: {missing}")
