"""Dead dependencies: chat survives a dead Jaeger; a dead backend, gateway or MCP server gets a
reason.

Runs its own stack, since it stops services.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from websockets.exceptions import ConnectionClosed

from omni_trace.stack import Stack
from omni_trace.stack.client import ChatRefused, login, open_chat
from omni_trace.traces import JaegerClient, TraceFetcher, has_spans_named
from otel.names import Attr, Flow, Service, SpanName
from otel.setup import create_tracer_provider
from services.common.protocol import CloseCode
from services.db.repository import flow as flow_repo
from tests.db import Admin
from tests.whole_stack.conftest import running_stack

pytestmark = [pytest.mark.stack, pytest.mark.slow]


@pytest.fixture(scope="module")
def own_stack(tmp_path_factory: pytest.TempPathFactory, jwt_secret: str) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("degraded"), jwt_secret) as stack:
        yield stack


_tool_failed = has_spans_named(
    (Service.OMNI2, SpanName.execute_tool("database_query")), (Service.OMNI2, SpanName.TURN)
)


async def test_mcp_server_down_gives_an_error_frame_and_the_chat_goes_on(own_stack: Stack) -> None:
    """Runs first: the later tests stop Jaeger."""
    provider = create_tracer_provider(
        Service.CHAT_CLIENT, otlp_endpoint=own_stack.info.otlp_http_endpoint
    )
    token = await login(own_stack.info.dashboard_url, "bob", "bob-demo")
    async with open_chat(own_stack.info.dashboard_ws_url, token, tracer_provider=provider) as chat:
        assert (await chat.send("query the database")).ok
        own_stack.stop_service("mcp-tools")
        failed = await chat.send("query the database again")
        after = await chat.send("hello, still there?")
        own_stack.start_service("mcp-tools")
        recovered = await chat.send("and query the database once more")
    provider.force_flush()
    provider.shutdown()
    assert failed.frame["type"] == "error" and failed.frame["code"] == "mcp_unavailable"
    assert failed.error and failed.error.startswith("MCP server unreachable")
    assert after.ok, "the connection stays usable"
    assert recovered.ok and recovered.frame["result"]["tools_used"] == ["database_query"], (
        "tools work again once the MCP server is back"
    )
    # No provider to flush: the client's spans were flushed before it shut down.
    with JaegerClient(own_stack.info.jaeger_query_url) as jaeger:
        spans = TraceFetcher(jaeger).wait(failed.trace_id, _tool_failed, what="execute_tool")
    tool = spans.one(f"{Service.OMNI2}:{SpanName.execute_tool('database_query')}")
    turn = spans.one(f"{Service.OMNI2}:{SpanName.TURN}")
    spans.expect(
        tool.status == "ERROR" and tool.attributes.get(Attr.ERROR_TYPE) == "mcp_unavailable",
        "execute_tool records the unreachable server",
    )
    spans.expect(turn.status == "ERROR", "chat.turn ends in error")
    admin = Admin(own_stack.info.omni2_database_url)
    events = admin(lambda s: flow_repo.flow_events(s, trace_id=failed.trace_id))
    assert [(e.kind, e.name) for e in events if e.status == "error"] == [
        (Flow.TOOL_CALL, "database_query"),
        (Flow.ERROR, "mcp_unavailable"),
    ]


async def test_chat_works_with_jaeger_stopped(own_stack: Stack) -> None:
    own_stack.stop_service("jaeger")
    started = time.monotonic()
    token = await login(own_stack.info.dashboard_url, "alice", "alice-demo")
    async with open_chat(own_stack.info.dashboard_ws_url, token) as chat:
        for text in ("is anyone tracing?", "second message"):
            reply = await chat.send(text)
            assert reply.ok, reply.frame
            assert reply.text
    assert time.monotonic() - started < 5, "a dead Jaeger must not slow the chat down"


async def test_backend_going_away_closes_the_client_with_its_code(own_stack: Stack) -> None:
    token = await login(own_stack.info.dashboard_url, "alice", "alice-demo")
    async with open_chat(own_stack.info.dashboard_ws_url, token) as chat:
        own_stack.stop_service("omni2")
        with pytest.raises(ConnectionClosed) as closed:
            await chat.connection.recv()
    rcvd = closed.value.rcvd
    assert rcvd is not None
    # uvicorn closes its sockets with 1012 (service restart); Traefik and the dashboard pass
    # the backend's code on instead of inventing one.
    assert rcvd.code == 1012, rcvd
    own_stack.start_service("omni2")
    async with open_chat(own_stack.info.dashboard_ws_url, token) as chat:
        assert (await chat.send("back again?")).ok


async def test_unreachable_gateway_gets_a_clear_reason(own_stack: Stack) -> None:
    token = await login(own_stack.info.dashboard_url, "alice", "alice-demo")
    own_stack.stop_service("traefik")
    with pytest.raises(ChatRefused) as refused:
        async with open_chat(own_stack.info.dashboard_ws_url, token):
            pass
    assert refused.value.code == CloseCode.GATEWAY_UNREACHABLE
    assert "unreachable" in refused.value.reason
