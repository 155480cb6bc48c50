"""The server decides what is traced, per connection, and a public deployment can link to
the client's trace instead of continuing it: a stack with DASHBOARD_TRACE_SAMPLE_RATIO=0.5
and DASHBOARD_CLIENT_TRACE=link. Each conversation is kept or dropped whole, and the audit
reads linked chains as whole."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider

from omni_trace.stack import Stack
from omni_trace.stack.client import open_chat
from omni_trace.traces import AuditQuery, JaegerClient, Trace, run_audit, wait_for_chain
from otel.names import Service, SpanName
from otel.setup import create_tracer_provider
from services.common.tokens import issue_token
from services.db.models import Conversation
from tests.db import Admin
from tests.whole_stack.conftest import new_user, running_stack

pytestmark = [pytest.mark.stack, pytest.mark.slow]

CONNECTIONS = 10


@dataclass
class Conv:
    conversation_id: str
    session_trace_id: str = ""  # the dashboard's (its own trace in link mode)
    message_trace_ids: list[str] = field(default_factory=list)  # the dashboard's too


@pytest.fixture(scope="module")
def sampled_stack(tmp_path_factory: pytest.TempPathFactory, jwt_secret: str) -> Iterator[Stack]:
    env = {"dashboard": {"DASHBOARD_TRACE_SAMPLE_RATIO": "0.5", "DASHBOARD_CLIENT_TRACE": "link"}}
    with running_stack(Path(tmp_path_factory.mktemp("sampled")), jwt_secret, None, env) as stack:
        yield stack


async def _conversations(stack: Stack, jwt_secret: str, provider: TracerProvider) -> list[Conv]:
    admin = Admin(stack.info.omni2_database_url)
    found = []
    for _ in range(CONNECTIONS):
        token = issue_token(new_user(admin), jwt_secret)
        async with open_chat(stack.info.dashboard_ws_url, token, tracer_provider=provider) as chat:
            assert chat.conversation_id
            conv = Conv(chat.conversation_id)
            for text in ("hello", "again"):
                reply = await chat.send(f"{text} {uuid.uuid4().hex[:6]}")
                assert reply.ok, reply.frame
                server_trace = reply.frame["trace_id"]
                assert server_trace != reply.trace_id  # link mode: a trace of its own
                conv.message_trace_ids.append(server_trace)
        row = admin(lambda s, cid=conv.conversation_id: s.get(Conversation, cid))
        conv.session_trace_id = row.trace_id
        found.append(conv)
    return found


def test_each_conversation_is_kept_or_dropped_whole(sampled_stack: Stack, jwt_secret: str) -> None:
    provider = create_tracer_provider(
        Service.CHAT_CLIENT, otlp_endpoint=sampled_stack.info.otlp_http_endpoint
    )
    try:
        conversations = asyncio.run(_conversations(sampled_stack, jwt_secret, provider))
    finally:
        provider.shutdown()
    with JaegerClient(sampled_stack.info.jaeger_query_url) as jaeger:
        # Python services export every 200 ms; what is not there after a few seconds was dropped.
        time.sleep(3)
        kept, dropped = [], []
        for conv in conversations:
            traces = [conv.session_trace_id, *conv.message_trace_ids]
            services = [{s.service for s in jaeger.get_trace(t)} for t in traces]
            ours = [svc - {Service.TRAEFIK, Service.AUTH} for svc in services]
            if all(not s for s in ours):
                dropped.append(conv)
                continue
            assert all({Service.DASHBOARD, Service.OMNI2} <= s for s in ours), (
                f"conversation {conv.conversation_id} kept only in part: {services}"
            )
            kept.append(conv)
        assert kept and dropped, f"{len(kept)} kept, {len(dropped)} dropped of {CONNECTIONS}"
        for conv in kept:
            for trace_id in conv.message_trace_ids:
                report = wait_for_chain(jaeger, trace_id)
                assert not report.broken, report.problems
                assert report.client_trace_id, "the relay links to the client's trace"
                message = Trace(jaeger.get_trace(trace_id))
                relay = message.one(f"{Service.DASHBOARD}:{SpanName.RELAY}")
                message.expect(
                    not relay.parent_span_id, "link mode: the relay roots the message trace"
                )
            reports = run_audit(jaeger, AuditQuery(conversation_id=conv.conversation_id))
            assert sorted(r.trace_id for r in reports) == sorted(conv.message_trace_ids)
            assert not any(r.broken for r in reports), [r.problems for r in reports]
