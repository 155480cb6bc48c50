"""The maintained instrumentation in real traces: opentelemetry-instrumentation-fastapi makes
the HTTP server spans of the dashboard's login, auth's ForwardAuth check and the chat page's
/config.json, each once (FastAPI's own telemetry is off), under the caller's context."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import httpx
import pytest

from omni_trace.stack import Stack
from omni_trace.stack.client import login, open_chat
from omni_trace.stack.demo import message_trace_complete
from omni_trace.stack.plugin import ChatFactory
from omni_trace.traces import JaegerClient, TraceFetcher, has_services
from otel.names import Service, SpanName
from otel.setup import create_tracer_provider
from services.common.tokens import issue_token
from tests.whole_stack.conftest import running_stack

pytestmark = [pytest.mark.stack, pytest.mark.slow]

FASTAPI = "opentelemetry.instrumentation.fastapi"


def _traceparent() -> tuple[str, str]:
    trace_id = secrets.token_hex(16)
    return trace_id, f"00-{trace_id}-{secrets.token_hex(8)}-01"


def test_login_and_the_pages_config_are_server_spans_of_the_instrumentation(
    stack: Stack, omni_jaeger: JaegerClient, omni_traces: TraceFetcher
) -> None:
    login_trace, traceparent = _traceparent()
    response = httpx.post(
        f"{stack.info.dashboard_url}/api/login",
        json={"username": "alice", "password": "alice-demo"},
        headers={"traceparent": traceparent},
        timeout=10,
    )
    assert response.status_code == 200
    # The page's files are not traced. Asked before /config.json: once that span is in
    # Jaeger, a span of the page (same process, same export queue) would be too.
    first_page_trace, traceparent = _traceparent()
    page = httpx.get(
        f"{stack.info.frontend_url}/", headers={"traceparent": traceparent}, timeout=10
    )
    assert page.status_code == 200
    config_trace, traceparent = _traceparent()
    config = httpx.get(
        f"{stack.info.frontend_url}/config.json", headers={"traceparent": traceparent}, timeout=10
    )
    assert config.status_code == 200
    # The page's files are not traced: no trace at all for them.
    page_trace, traceparent = _traceparent()
    page = httpx.get(
        f"{stack.info.frontend_url}/", headers={"traceparent": traceparent}, timeout=10
    )
    assert page.status_code == 200

    login = omni_traces.wait(login_trace, has_services(Service.DASHBOARD), what="the login span")
    (span,) = login.select(f"{Service.DASHBOARD}:POST /api/login[kind=SERVER]")
    assert span.scope == FASTAPI and len(login.spans) == 1, login.tree()
    assert span.attributes["http.route"] == "/api/login"
    assert span.attributes["http.response.status_code"] == 200

    served = omni_traces.wait(config_trace, has_services(Service.FRONTEND), what="/config.json")
    (span,) = served.select(f"{Service.FRONTEND}:GET /config.json[kind=SERVER]")
    assert span.scope == FASTAPI and len(served.spans) == 1, served.tree()
    assert omni_jaeger.get_trace(first_page_trace) == []
    assert omni_jaeger.get_trace(page_trace) == []


async def test_forward_auth_is_one_instrumented_span_under_traefik(
    omni_chat: ChatFactory, omni_traces: TraceFetcher, jwt_secret: str
) -> None:
    async with omni_chat(token=issue_token("alice", jwt_secret)) as chat:
        await chat.send("hello")
    session = omni_traces.wait(
        chat.session_trace_id, has_services(Service.AUTH, Service.TRAEFIK), what="auth"
    )
    (verify,) = session.select(f"{Service.AUTH}:{SpanName.AUTH_VERIFY}")
    assert verify.scope == FASTAPI
    session.assert_chain(f"traefik:AuthRequest > {Service.AUTH}:{SpanName.AUTH_VERIFY}")
    # No second span for the same request (FastAPI's own telemetry is off), and none for the
    # WebSocket route of OMNI2 or the dashboard.
    assert len(session.select(f"{Service.AUTH}:*")) == 1, session.tree()
    assert not session.select("*:GET /ws/chat"), session.tree()


SQLALCHEMY = "opentelemetry.instrumentation.sqlalchemy"


@pytest.fixture(scope="module")
def sql_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    env = {"omni2": {"OMNI2_SQL_SPANS": "true"}}
    run_dir = tmp_path_factory.mktemp("sql-stack")
    with running_stack(run_dir, secrets.token_urlsafe(32), service_env=env) as stack:
        yield stack


async def test_sql_spans_when_switched_on(sql_stack: Stack) -> None:
    provider = create_tracer_provider(
        Service.CHAT_CLIENT, otlp_endpoint=sql_stack.info.otlp_http_endpoint
    )
    try:
        token = await login(sql_stack.info.dashboard_url, "alice", "alice-demo")
        async with open_chat(
            sql_stack.info.dashboard_ws_url, token, tracer_provider=provider
        ) as chat:
            reply = await chat.send("a message whose rows are traced")
        provider.force_flush()
    finally:
        provider.shutdown()
    with JaegerClient(sql_stack.info.jaeger_query_url) as jaeger:
        message = TraceFetcher(jaeger).wait(
            reply.trace_id, message_trace_complete, what="the message chain"
        )
    inserts = message.select(f"{Service.OMNI2}:INSERT *")
    assert inserts and all(s.scope == SQLALCHEMY for s in inserts), message.tree()
    message.assert_chain(f"{Service.OMNI2}:{SpanName.PERSIST} >> {Service.OMNI2}:INSERT *")
    for span in message.select(f"{Service.OMNI2}:[ISU]*[kind=CLIENT]"):
        assert "a message whose rows" not in str(span.attributes), span.attributes
