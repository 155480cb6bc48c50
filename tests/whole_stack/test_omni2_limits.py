"""OMNI2's limits attacked the way a hostile client would, through the dashboard: many
parallel connections of one user, one connection too many, a token that runs out, and
malformed frames that must neither start traces of their own nor go unrecorded."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from opentelemetry.sdk.trace import TracerProvider
from websockets.exceptions import ConnectionClosed

from omni_trace.stack import Stack
from omni_trace.stack.client import ChatConnection, ChatRefused, ChatReply, open_chat
from omni_trace.stack.plugin import ChatFactory
from omni_trace.traces import TraceFetcher, has_spans_named
from otel.names import Attr, Event, Flow, Service, SpanName
from otel.setup import create_tracer_provider
from services.common.protocol import CloseCode
from services.common.tokens import issue_token
from services.db.repository import flow as flow_repo
from services.db.repository import usage as usage_repo
from tests.db import Admin
from tests.pg import create_database
from tests.whole_stack.conftest import new_user, running_stack

pytestmark = [pytest.mark.stack, pytest.mark.slow]


@dataclass
class Backend:
    stack: Stack
    admin: Admin
    provider: TracerProvider


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def backend(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, jwt_secret: str
) -> Iterator[Backend]:
    """The shared stack (SQLite), and a stack of its own on a real PostgreSQL server."""
    if request.param == "sqlite":
        yield Backend(
            request.getfixturevalue("stack"),
            request.getfixturevalue("admin"),
            request.getfixturevalue("omni_tracer_provider"),
        )
        return
    base: str = request.getfixturevalue("postgres")
    url = asyncio.run(create_database(base, f"limits_{uuid.uuid4().hex[:8]}"))
    with running_stack(tmp_path_factory.mktemp("pg-limits"), jwt_secret, url) as stack:
        provider = create_tracer_provider(
            Service.CHAT_CLIENT, otlp_endpoint=stack.info.otlp_http_endpoint
        )
        yield Backend(stack, Admin(url), provider)
        provider.shutdown()


async def _all_at_once(
    stack: Stack, token: str, provider: TracerProvider, n: int, text: str
) -> list[ChatReply]:
    """`n` connections of one token, opened first, then one message each, sent together."""
    async with contextlib.AsyncExitStack() as exits:
        chats: list[ChatConnection] = await asyncio.gather(
            *(
                exits.enter_async_context(
                    open_chat(stack.info.dashboard_ws_url, token, tracer_provider=provider)
                )
                for _ in range(n)
            )
        )
        return await asyncio.gather(*(chat.send(f"{text} {i}") for i, chat in enumerate(chats)))


async def test_parallel_connections_cannot_spend_past_the_daily_limit(
    backend: Backend, jwt_secret: str
) -> None:
    admin = backend.admin
    user = new_user(admin, daily_tokens=120, max_connections=25)
    token = issue_token(user, jwt_secret)
    replies = await _all_at_once(backend.stack, token, backend.provider, 20, "tell me something")

    answered = [r for r in replies if r.ok]
    refused = [r for r in replies if not r.ok]
    assert answered, [r.frame for r in replies]
    assert {r.frame.get("code") for r in refused} <= {"usage_reserved", "daily_limit_exceeded"}
    reserved = next(r for r in refused if r.frame.get("code") == "usage_reserved")
    assert reserved.error is not None
    assert reserved.error.startswith("Daily limit reached with answers in progress")
    tokens, _ = admin(lambda s: usage_repo.usage_since(s, user, usage_repo.start_of_day()))
    largest = max(r.frame["result"]["tokens_used"] for r in answered)
    assert tokens == sum(r.frame["result"]["tokens_used"] for r in answered)
    assert tokens <= 120 + largest, f"{len(answered)} answers spent {tokens} of 120 tokens"
    day = admin(lambda s: usage_repo.day_usage(s, user, usage_repo.today()))
    assert (day.tokens, day.reserved_tokens) == (tokens, 0), "every reservation was settled"
    # Each refusal is in the audit trail with its message's trace id.
    events = admin(lambda s: flow_repo.flow_events(s, trace_id=reserved.trace_id))
    assert [(e.name, e.status) for e in events][-1] == ("usage", "denied")


async def test_parallel_connections_hold_the_rate_limit(backend: Backend, jwt_secret: str) -> None:
    user = new_user(backend.admin, rate_per_minute=3, max_connections=12)
    token = issue_token(user, jwt_secret)
    started = time.monotonic()
    replies = await _all_at_once(backend.stack, token, backend.provider, 12, "hello")
    assert time.monotonic() - started < 60, "the test must stay within one window"
    assert sum(r.ok for r in replies) == 3, [r.frame for r in replies]
    assert {r.frame.get("code") for r in replies if not r.ok} == {"rate_limited"}


async def test_one_connection_too_many_is_refused_with_4429_until_one_closes(
    stack: Stack,
    omni_tracer_provider: TracerProvider,
    omni_traces: TraceFetcher,
    admin: Admin,
    jwt_secret: str,
) -> None:
    user = new_user(admin)  # the default: 5 connections per user
    token = issue_token(user, jwt_secret)
    url = stack.info.dashboard_ws_url
    async with contextlib.AsyncExitStack() as exits:
        chats = [
            await exits.enter_async_context(
                open_chat(url, token, tracer_provider=omni_tracer_provider)
            )
            for _ in range(5)
        ]
        with pytest.raises(ChatRefused) as refused:
            async with open_chat(url, token, tracer_provider=omni_tracer_provider):
                pass
        assert refused.value.code == CloseCode.TOO_MANY_CONNECTIONS
        assert refused.value.reason == "too many connections: 5 already open for this user"
        assert (await chats[0].send("the others still chat")).ok

        await chats[4].close()
        # The slot is free once OMNI2 has seen that close (a hop or three away).
        deadline = time.monotonic() + 5
        while True:
            try:
                async with open_chat(url, token, tracer_provider=omni_tracer_provider) as again:
                    assert (await again.send("my turn")).ok
                break
            except ChatRefused as still:
                assert still.code == CloseCode.TOO_MANY_CONNECTIONS
                assert time.monotonic() < deadline, "closing a connection never freed its slot"
                await asyncio.sleep(0.1)

    events = admin(lambda s: flow_repo.flow_events(s, trace_id=refused.value.session_trace_id))
    assert [(e.kind, e.name, e.status) for e in events] == [
        (Flow.CHECK, "user", "ok"),
        (Flow.CHECK, "connections", "denied"),
        (Flow.CONNECT, "refused", "denied"),
    ]
    spans = omni_traces.wait(
        refused.value.session_trace_id,
        has_spans_named((Service.OMNI2, SpanName.CONNECT), (Service.OMNI2, SpanName.CHECKS)),
        what="omni2's refusal",
    )
    connect = spans.one(f"{Service.OMNI2}:{SpanName.CONNECT}")
    checks = spans.one(f"{Service.OMNI2}:{SpanName.CHECKS}")
    connections = checks.event(Event.check("connections"))
    spans.expect(
        connect.attributes.get(Attr.CLOSE_CODE) == CloseCode.TOO_MANY_CONNECTIONS
        and connect.attributes.get(Attr.ERROR_TYPE) == "too_many_connections"
        and checks.parent_span_id == connect.span_id
        and checks.status == "ERROR"
        and checks.attributes.get(Attr.CHECK_RESULT) == "deny"
        and checks.attributes.get(Attr.CHECK_NAME) == "connections"
        and checks.attributes.get(Attr.ERROR_TYPE) == "too_many_connections",
        "omni2's chat.connect records the refusal, its checks span the check that denied",
    )
    spans.expect(
        checks.event_names == (Event.check("user"), Event.check("connections"))
        and connections is not None
        and connections.attributes.get(Attr.CHECK_RESULT) == "deny"
        and connections.attributes.get(Attr.LIMIT) == 5
        and connections.attributes.get(Attr.LIMIT_USED) == 5,
        "the connections check's event records the limit and the connections open",
    )
    assert {e.span_id for e in events if e.kind == Flow.CHECK} == {checks.span_id}


async def test_a_connection_ends_with_4401_when_its_token_expires(
    omni_chat: ChatFactory, omni_traces: TraceFetcher, admin: Admin, jwt_secret: str
) -> None:
    user = new_user(admin)
    async with omni_chat(token=issue_token(user, jwt_secret, ttl_seconds=3)) as chat:
        assert (await chat.send("hello")).ok
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(chat.connection.recv(), timeout=10)
    rcvd = closed.value.rcvd
    assert rcvd is not None and (rcvd.code, rcvd.reason) == (4401, "token expired"), rcvd

    events = admin(lambda s: flow_repo.flow_events(s, conversation_id=chat.conversation_id))
    (expired,) = [e for e in events if e.kind == Flow.CLOSE]
    assert expired.name == "token_expired"
    spans = omni_traces.wait(
        expired.trace_id,
        has_spans_named((Service.OMNI2, SpanName.CLOSE)),
        what="omni2's chat.close",
    )
    close = spans.one(f"{Service.OMNI2}:{SpanName.CLOSE}")
    connect = spans.one(f"{Service.OMNI2}:{SpanName.CONNECT}")
    spans.expect(
        close.parent_span_id == connect.span_id
        and close.span_id == expired.span_id
        and close.attributes.get(Attr.CLOSE_CODE) == 4401,
        "the close is in the session trace, below omni2's chat.connect",
    )


async def test_malformed_frames_are_recorded_in_the_session_trace_not_traces_of_their_own(
    omni_chat: ChatFactory, omni_traces: TraceFetcher, admin: Admin, jwt_secret: str
) -> None:
    user = new_user(admin)
    async with omni_chat(token=issue_token(user, jwt_secret)) as chat:
        answers = [await chat.send_raw(frame) for frame in ("not json", '{"type": "shout"}') * 5]
        assert (await chat.send("still fine?")).ok
    assert {(a["type"], a["code"]) for a in answers} == {
        ("error", "invalid_json"),
        ("error", "unknown_type"),
    }
    (trace_id,) = {a["trace_id"] for a in answers}  # ten frames, one trace: the session's
    events = admin(lambda s: flow_repo.flow_events(s, conversation_id=chat.conversation_id))
    frames = [e for e in events if e.kind == Flow.FRAME]
    assert [(e.name, e.status, e.trace_id) for e in frames] == [
        (a["code"], "denied", trace_id) for a in answers
    ]
    spans = omni_traces.wait(
        trace_id,
        lambda spans: sum(s.name == SpanName.REJECT for s in spans) == 10,
        what="ten chat.reject spans",
    )
    connect = spans.one(f"{Service.OMNI2}:{SpanName.CONNECT}")
    rejects = [s for s in spans if s.name == SpanName.REJECT]
    spans.expect(
        all(r.parent_span_id == connect.span_id and r.status == "ERROR" for r in rejects)
        and {r.span_id for r in rejects} == {e.span_id for e in frames},
        "each malformed frame: a chat.reject below omni2's chat.connect, named by its flow event",
    )
