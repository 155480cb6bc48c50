"""The audit trail in the database, on SQLite and on a real PostgreSQL server: every row of a
message carries its trace id, and every stored trace id finds its trace in Jaeger."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from opentelemetry.sdk.trace import TracerProvider

from omni_trace.stack import Stack
from omni_trace.stack.client import open_chat
from omni_trace.traces import JaegerClient, TraceFetcher, has_spans_named
from otel.names import Attr, Flow, Service, SpanName
from otel.setup import create_tracer_provider
from services.common.tokens import issue_token
from services.db.models import Conversation
from services.db.repository import conversations as conversations_repo
from services.db.repository import flow as flow_repo
from services.db.repository import usage as usage_repo
from tests.db import Admin
from tests.pg import create_database
from tests.whole_stack.conftest import new_user, running_stack

pytestmark = [pytest.mark.stack, pytest.mark.slow]


@dataclass
class Backend:
    name: str
    stack: Stack
    admin: Admin
    provider: TracerProvider  # the chat client's
    traces: TraceFetcher  # reads the stack's Jaeger, flushing the chat client first


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def backend(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, jwt_secret: str
) -> Iterator[Backend]:
    if request.param == "sqlite":  # the shared stack runs on SQLite
        stack: Stack = request.getfixturevalue("stack")
        shared: TracerProvider = request.getfixturevalue("omni_tracer_provider")
        traces = TraceFetcher(request.getfixturevalue("omni_jaeger"), shared)
        yield Backend("sqlite", stack, request.getfixturevalue("admin"), shared, traces)
        return
    base: str = request.getfixturevalue("postgres")
    url = asyncio.run(create_database(base, f"stack_{uuid.uuid4().hex[:8]}"))
    with running_stack(tmp_path_factory.mktemp("pg-stack"), jwt_secret, url) as stack:
        provider = create_tracer_provider(
            Service.CHAT_CLIENT, otlp_endpoint=stack.info.otlp_http_endpoint
        )
        with JaegerClient(stack.info.jaeger_query_url) as jaeger:
            traces = TraceFetcher(jaeger, provider)
            yield Backend("postgresql", stack, Admin(url), provider, traces)
        provider.shutdown()


_persisted = has_spans_named((Service.OMNI2, SpanName.TURN), (Service.OMNI2, SpanName.PERSIST))


async def test_every_stored_row_carries_a_trace_id_found_in_jaeger(
    backend: Backend, jwt_secret: str
) -> None:
    user = new_user(backend.admin)
    token = issue_token(user, jwt_secret)
    texts = ["hello there", "What tables does the database have?", "run a broken query"]
    async with open_chat(
        backend.stack.info.dashboard_ws_url, token, tracer_provider=backend.provider
    ) as chat:
        replies = [await chat.send(text) for text in texts]
    assert all(r.ok for r in replies), [r.frame for r in replies]
    conversation = chat.conversation_id
    assert conversation

    stored = backend.admin(lambda s: s.get(Conversation, conversation))
    assert stored is not None and stored.user_id == user
    assert stored.trace_id == chat.session_trace_id

    messages = backend.admin(lambda s: conversations_repo.conversation_messages(s, conversation))
    assert [(m.role, m.content, m.trace_id) for m in messages if m.role == "user"] == [
        ("user", text, r.trace_id) for text, r in zip(texts, replies, strict=True)
    ]
    assert [(m.content, m.trace_id) for m in messages if m.role == "assistant"] == [
        (r.text, r.trace_id) for r in replies
    ]
    usage = backend.admin(lambda s: usage_repo.usage_rows(s, conversation))
    assert [(u.trace_id, u.tokens_input + u.tokens_output) for u in usage] == [
        (r.trace_id, r.frame["result"]["tokens_used"]) for r in replies
    ]
    events = backend.admin(lambda s: flow_repo.flow_events(s, conversation_id=conversation))
    tools = [(e.name, e.status, e.trace_id) for e in events if e.kind == Flow.TOOL_CALL]
    assert tools == [
        ("list_tables", "ok", replies[1].trace_id),
        ("database_query", "error", replies[2].trace_id),
    ]
    failed = next(e for e in events if e.kind == Flow.TOOL_CALL and e.status == "error")
    assert "no such table" in failed.detail["error"]
    assert failed.duration_ms is not None and failed.duration_ms > 0

    connect = [(e.kind, e.name, e.status) for e in events if e.trace_id == chat.session_trace_id]
    assert connect == [
        (Flow.CHECK, "user", "ok"),
        (Flow.CHECK, "connections", "ok"),
        (Flow.CONNECT, "accepted", "ok"),
    ]
    trace_ids = {m.trace_id for m in messages} | {u.trace_id for u in usage}
    trace_ids |= {e.trace_id for e in events if e.trace_id != chat.session_trace_id}
    assert trace_ids == {r.trace_id for r in replies}
    for trace_id in sorted(trace_ids):
        spans = backend.traces.wait(trace_id, _persisted, what="omni2's chat.persist")
        turn = spans.one(f"{Service.OMNI2}:{SpanName.TURN}")
        persisted = spans.select(f"*:{SpanName.PERSIST}")
        spans.expect(
            all(
                p.parent_span_id == turn.span_id
                and p.attributes.get(Attr.DB_SYSTEM) == backend.name
                for p in persisted
            ),
            f"chat.persist ({backend.name}) below chat.turn",
        )
        flow_spans = {e.span_id for e in events if e.trace_id == trace_id and e.span_id}
        spans.expect(
            flow_spans <= {s.span_id for s in spans}, "every flow event names a span of its trace"
        )
