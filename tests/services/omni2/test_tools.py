"""The agent loop with the real MCP server (in process): tool spans, failures, permissions."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncSession

from otel.names import Attr, Flow, SpanName
from services.db.models import Role
from services.db.repository import flow as flow_repo
from services.db.repository import users as users_repo
from services.mcp_tools.settings import McpToolsSettings
from services.omni2.model import (
    ChatMessage,
    Finished,
    ModelError,
    ModelEvent,
    OfflineModel,
    TextChunk,
    ToolCall,
    ToolSpec,
)
from services.omni2.settings import Omni2Settings
from services.omni2.tools import McpToolbox, ToolsUnavailable
from tests.db import Admin
from tests.services.mcp_tools.serve import TOKEN, serve_mcp_tools
from tests.services.omni2.conftest import SECRET, converse, gateway_headers


def tree(spans: tuple[ReadableSpan, ...]) -> str:
    return "\n".join(
        f"{s.name} kind={s.kind.name} parent={s.parent.span_id if s.parent else None:} "
        f"id={s.context.span_id}"
        for s in spans
    )


def test_tool_call_is_traced_and_answered(
    make_client: Callable[..., TestClient], admin: Admin, spans: InMemorySpanExporter
) -> None:
    client = make_client()
    with client.websocket_connect("/ws/chat", headers=gateway_headers("alice")) as ws:
        conversation = ws.receive_json()["conversation_id"]
        reply, frames = converse(ws, "What is in the products database?")
    done = frames[-1]
    assert done["type"] == "done", done
    assert done["result"]["tools_used"] == ["database_query"]
    assert done["result"]["tool_calls"] == 1
    assert "The database_query tool returned" in reply
    finished = spans.get_finished_spans()
    print(tree(finished))
    turn = next(s for s in finished if s.name == SpanName.TURN)
    models = [s for s in finished if s.name == SpanName.model_call("omni2-offline-1")]
    tool = next(s for s in finished if s.name == SpanName.execute_tool("database_query"))
    assert len(models) == 2
    assert all(m.parent and m.parent.span_id == turn.context.span_id for m in models)
    assert tool.parent and tool.parent.span_id == turn.context.span_id
    assert tool.attributes is not None
    assert tool.attributes[Attr.GEN_AI_TOOL_NAME] == "database_query"
    assert tool.attributes[Attr.GEN_AI_OPERATION] == "execute_tool"
    assert str(tool.attributes[Attr.GEN_AI_TOOL_CALL_ID]).startswith("call_")
    assert tool.attributes[Attr.TOOL_STATUS] == "ok"
    # In process the SDK dispatches without JSON-RPC, so only the server span exists here
    # (the stack test sees the client span between them).
    (mcp_server,) = [
        s
        for s in finished
        if s.name == SpanName.mcp("tools/call", "database_query") and s.kind is SpanKind.SERVER
    ]
    assert mcp_server.parent and mcp_server.parent.span_id == tool.context.span_id
    assert mcp_server.attributes and mcp_server.attributes[Attr.MCP_METHOD] == "tools/call"
    same_trace = [s for s in finished if s.context.trace_id == turn.context.trace_id]
    assert all(
        (s.attributes or {}).get(Attr.CONVERSATION_ID) == conversation for s in same_trace
    ), tree(finished)
    events = admin(lambda s: flow_repo.flow_events(s, trace_id=done["trace_id"]))
    tool_events = [e for e in events if e.kind == Flow.TOOL_CALL]
    assert [(e.name, e.status) for e in tool_events] == [("database_query", "ok")]
    assert tool_events[0].duration_ms is not None and tool_events[0].duration_ms > 0


def test_failed_tool_is_reported_to_the_model_and_recorded_as_failed(
    make_client: Callable[..., TestClient], admin: Admin, spans: InMemorySpanExporter
) -> None:
    client = make_client()
    with client.websocket_connect("/ws/chat", headers=gateway_headers("alice")) as ws:
        ws.receive_json()
        reply, frames = converse(ws, "run a broken query please")
    assert frames[-1]["type"] == "done"
    assert "The database_query tool failed" in reply and "no such table" in reply
    tool = next(
        s for s in spans.get_finished_spans() if s.name == SpanName.execute_tool("database_query")
    )
    assert tool.status.status_code.name == "ERROR"
    assert tool.attributes and tool.attributes[Attr.TOOL_STATUS] == "error"
    events = admin(lambda s: flow_repo.flow_events(s, trace_id=frames[-1]["trace_id"]))
    assert [(e.name, e.status) for e in events if e.kind == Flow.TOOL_CALL] == [
        ("database_query", "error")
    ]


def test_role_without_tools_gets_none(make_client: Callable[..., TestClient]) -> None:
    client = make_client()
    with client.websocket_connect("/ws/chat", headers=gateway_headers("carol")) as ws:
        ws.receive_json()
        _, frames = converse(ws, "query the database")
    assert frames[-1]["result"]["tools_used"] == []


def test_mcp_server_down_gives_an_error_frame_and_the_chat_goes_on(
    make_client: Callable[..., TestClient], admin: Admin, spans: InMemorySpanExporter
) -> None:
    client = make_client()
    with client.websocket_connect("/ws/chat", headers=gateway_headers("bob")) as ws:
        ws.receive_json()
        assert converse(ws, "query the database")[1][-1]["type"] == "done"
        toolbox = client.app.state.toolbox  # type: ignore[attr-defined]
        toolbox.url = "http://127.0.0.1:9/mcp"  # the server goes away ...
        client.portal.call(toolbox.aclose)  # type: ignore[union-attr]  # ... with its session
        _, frames = converse(ws, "query the database again")
        ws.send_json({"type": "ping"})
        assert ws.receive_json() == {"type": "pong"}
        _, after = converse(ws, "hello")
    error = frames[-1]
    assert error["type"] == "error" and error["code"] == "mcp_unavailable", error
    assert "MCP server unreachable" in error["error"]
    assert after[-1]["type"] == "done", "the connection stays usable"
    tool = [
        s
        for s in spans.get_finished_spans()
        if s.name == SpanName.execute_tool("database_query")
        and f"{s.context.trace_id:032x}" == error["trace_id"]
    ]
    assert tool and tool[0].status.status_code.name == "ERROR"
    events = admin(lambda s: flow_repo.flow_events(s, trace_id=error["trace_id"]))
    assert [(e.kind, e.name, e.status) for e in events if e.status == "error"] == [
        (Flow.TOOL_CALL, "database_query", "error"),
        (Flow.ERROR, "mcp_unavailable", "error"),
    ]


def test_mcp_server_down_before_any_catalogue_answers_without_tools(
    make_client: Callable[..., TestClient],
) -> None:
    client = make_client(mcp="http://127.0.0.1:9/mcp")
    with client.websocket_connect("/ws/chat", headers=gateway_headers("bob")) as ws:
        ws.receive_json()
        _, frames = converse(ws, "query the database")
    assert frames[0]["type"] == "warning" and frames[0]["code"] == "tools_unavailable"
    assert frames[-1]["type"] == "done" and frames[-1]["result"]["tools_used"] == []


class FlakyModel(OfflineModel):
    """Fails every other call after a few tokens, like a provider dropping a stream."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    async def stream(
        self, messages: Sequence[ChatMessage], tools: Sequence[ToolSpec] = ()
    ) -> AsyncIterator[ModelEvent]:
        self.calls += 1
        if self.calls % 2:
            yield TextChunk("Let me ")
            raise ModelError("provider returned HTTP 529 (overloaded)", "provider_overloaded")
        async for event in super().stream(messages, tools):
            yield event


def test_model_error_gives_an_error_frame_span_and_flow_event(
    make_client: Callable[..., TestClient], admin: Admin, spans: InMemorySpanExporter
) -> None:
    client = make_client(model=FlakyModel())
    with client.websocket_connect("/ws/chat", headers=gateway_headers("alice")) as ws:
        ws.receive_json()
        _, frames = converse(ws, "hello")
        _, after = converse(ws, "hello again")
    error = frames[-1]
    assert error["type"] == "error" and error["code"] == "provider_overloaded"
    assert error["error"] == "The model provider is overloaded; try again shortly"
    assert after[-1]["type"] == "done"
    (model,) = [
        s
        for s in spans.get_finished_spans()
        if s.name == SpanName.model_call("omni2-offline-1")
        and f"{s.context.trace_id:032x}" == error["trace_id"]
    ]
    assert model.status.status_code.name == "ERROR"
    assert model.attributes and model.attributes[Attr.ERROR_TYPE] == "provider_overloaded"
    events = admin(lambda s: flow_repo.flow_events(s, trace_id=error["trace_id"]))
    assert [(e.kind, e.status) for e in events if e.status == "error"] == [
        (Flow.MODEL_CALL, "error"),
        (Flow.ERROR, "error"),
    ]


class ToolHungryModel(OfflineModel):
    """Asks for a tool on every call: only the iteration cap ends its loop."""

    async def stream(
        self, messages: Sequence[ChatMessage], tools: Sequence[ToolSpec] = ()
    ) -> AsyncIterator[ModelEvent]:
        yield TextChunk("Checking. ")
        yield Finished(3, 2, "tool_calls", (ToolCall(f"call_{len(messages)}", "list_tables", {}),))


def test_agent_loop_stops_at_its_iteration_cap(
    make_client: Callable[..., TestClient], admin: Admin, spans: InMemorySpanExporter
) -> None:
    client = make_client(model=ToolHungryModel(), max_agent_iterations=3)
    with client.websocket_connect("/ws/chat", headers=gateway_headers("alice")) as ws:
        ws.receive_json()
        reply, frames = converse(ws, "loop forever")
    done = frames[-1]
    assert done["type"] == "done"
    assert done["result"]["finish_reason"] == "max_iterations"
    assert done["result"]["tool_calls"] == 3 and reply == "Checking. " * 3
    models = [s for s in spans.get_finished_spans() if s.name.startswith("chat ")]
    assert len(models) == 3
    (turn,) = [s for s in spans.get_finished_spans() if s.name == SpanName.TURN]
    assert turn.attributes and turn.attributes[Attr.AGENT_ITERATIONS] == 3
    events = admin(lambda s: flow_repo.flow_events(s, trace_id=done["trace_id"]))
    assert [e.name for e in events if e.kind == Flow.ERROR] == ["max_iterations"]


def test_a_tool_the_role_may_not_use_is_refused_without_calling_mcp(
    make_client: Callable[..., TestClient], admin: Admin, spans: InMemorySpanExporter
) -> None:
    client = make_client(model=ToolHungryModel(), max_agent_iterations=2)
    with client.websocket_connect("/ws/chat", headers=gateway_headers("carol")) as ws:
        ws.receive_json()
        _, frames = converse(ws, "list the tables")
    done = frames[-1]
    assert done["type"] == "done" and done["result"]["tools_used"] == ["list_tables"]
    finished = spans.get_finished_spans()
    tools = [s for s in finished if s.name == SpanName.execute_tool("list_tables")]
    assert tools and all(
        s.attributes and s.attributes[Attr.ERROR_TYPE] == "tool_not_allowed" for s in tools
    )
    assert not [s for s in finished if s.name.startswith("tools/call")], "MCP never called"
    events = admin(lambda s: flow_repo.flow_events(s, trace_id=done["trace_id"]))
    assert {e.detail.get("error_type") for e in events if e.kind == Flow.TOOL_CALL} == {
        "tool_not_allowed"
    }


def test_a_role_without_chat_permission_gets_an_error_frame(
    make_client: Callable[..., TestClient], admin: Admin
) -> None:
    async def mute(session: AsyncSession) -> None:
        session.add(Role(name="muted", description="", permissions=[], mcp_tools=[]))
        await session.flush()
        await users_repo.add_user(session, "quiet", "muted")

    client = make_client()
    admin(mute)
    with client.websocket_connect("/ws/chat", headers=gateway_headers("quiet")) as ws:
        assert ws.receive_json()["type"] == "welcome"
        _, frames = converse(ws, "hello")
        ws.send_json({"type": "ping"})
        assert ws.receive_json() == {"type": "pong"}
    assert frames[-1]["code"] == "permission_denied"
    assert frames[-1]["error"] == "your role may not chat"


class BuggyModel(OfflineModel):
    async def stream(
        self, messages: Sequence[ChatMessage], tools: Sequence[ToolSpec] = ()
    ) -> AsyncIterator[ModelEvent]:
        yield TextChunk("Oops")
        raise KeyError("choices")


def test_an_unexpected_failure_gives_an_internal_error_frame_and_the_chat_goes_on(
    make_client: Callable[..., TestClient], admin: Admin, spans: InMemorySpanExporter
) -> None:
    client = make_client(model=BuggyModel())
    with client.websocket_connect("/ws/chat", headers=gateway_headers("alice")) as ws:
        ws.receive_json()
        _, frames = converse(ws, "hello")
        ws.send_json({"type": "ping"})
        assert ws.receive_json() == {"type": "pong"}
    error = frames[-1]
    assert (error["type"], error["code"]) == ("error", "internal_error")
    (model,) = [s for s in spans.get_finished_spans() if s.name.startswith("chat ")]
    assert model.status.status_code.name == "ERROR"
    events = admin(lambda s: flow_repo.flow_events(s, trace_id=error["trace_id"]))
    assert [(e.kind, e.name) for e in events if e.status == "error"] == [
        (Flow.MODEL_CALL, "omni2-offline-1"),
        (Flow.ERROR, "internal_error"),
    ]


# -- the session at start, the catalogue in the background, the credential ----------------------

MCP_SPANS = ("server/discover", "tools/list", "tools/call")


def _wait_for(spans: InMemorySpanExporter, name: str) -> ReadableSpan:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        found = [s for s in spans.get_finished_spans() if s.name == name]
        if found:
            return found[0]
        time.sleep(0.02)
    raise AssertionError(f"no {name} span:\n{tree(spans.get_finished_spans())}")


def _trace(spans: InMemorySpanExporter, trace_id: int) -> list[ReadableSpan]:
    return [s for s in spans.get_finished_spans() if s.context.trace_id == trace_id]


def test_the_session_opens_at_start_in_its_own_trace_not_in_a_message(
    make_client: Callable[..., TestClient], spans: InMemorySpanExporter
) -> None:
    client = make_client()
    connect = _wait_for(spans, SpanName.MCP_CONNECT)
    assert connect.parent is None and connect.status.status_code is StatusCode.UNSET
    below = {s.name for s in _trace(spans, connect.context.trace_id) if s is not connect}
    assert below == {"server/discover", "tools/list"}, tree(spans.get_finished_spans())
    with client.websocket_connect("/ws/chat", headers=gateway_headers("alice")) as ws:
        ws.receive_json()
        _, frames = converse(ws, "hello")
    assert frames[-1]["type"] == "done"
    turn = next(s for s in spans.get_finished_spans() if s.name == SpanName.TURN)
    message = _trace(spans, turn.context.trace_id)
    assert not [s.name for s in message if s.name.startswith(MCP_SPANS)], tree(tuple(message))


def test_a_stale_catalogue_is_read_again_in_the_background(
    make_client: Callable[..., TestClient], spans: InMemorySpanExporter
) -> None:
    client = make_client()
    _wait_for(spans, SpanName.MCP_CONNECT)
    client.app.state.toolbox.ttl_s = 0  # type: ignore[attr-defined]  # always stale
    spans.clear()
    with client.websocket_connect("/ws/chat", headers=gateway_headers("alice")) as ws:
        ws.receive_json()
        _, frames = converse(ws, "hello")
    assert frames[-1]["type"] == "done"
    listed = _wait_for(spans, "tools/list")
    turn = next(s for s in spans.get_finished_spans() if s.name == SpanName.TURN)
    assert listed.context.trace_id != turn.context.trace_id and listed.parent is None
    message = _trace(spans, turn.context.trace_id)
    assert not [s.name for s in message if s.name.startswith(MCP_SPANS)], tree(tuple(message))


def test_the_start_records_an_unreachable_server_and_the_first_message_asks_again(
    make_client: Callable[..., TestClient], spans: InMemorySpanExporter
) -> None:
    client = make_client(mcp="http://127.0.0.1:9/mcp")
    connect = _wait_for(spans, SpanName.MCP_CONNECT)
    assert connect.status.status_code is StatusCode.ERROR
    assert connect.attributes and connect.attributes[Attr.ERROR_TYPE] == "mcp_unavailable"
    with client.websocket_connect("/ws/chat", headers=gateway_headers("bob")) as ws:
        ws.receive_json()
        _, frames = converse(ws, "query the database")
    assert frames[0]["code"] == "tools_unavailable" and frames[-1]["type"] == "done"


@pytest.fixture
def mcp_url(tmp_path: Path) -> Iterator[str]:
    settings = McpToolsSettings(sample_db=tmp_path / "s.db", auth_token=TOKEN)  # type: ignore[arg-type]
    with serve_mcp_tools(settings) as url:
        yield f"{url}/mcp"


async def test_omni2_sends_its_credential_on_every_request(mcp_url: str) -> None:
    toolbox = McpToolbox(mcp_url, auth_token=SecretStr(TOKEN))
    try:
        names = [t.name for t in await toolbox.catalogue("c-1", "alice")]
        result = await toolbox.call(ToolCall("call_1", "list_tables", {}), "c-1", "alice")
    finally:
        await toolbox.aclose()
    assert names == ["database_query", "list_tables"]
    assert not result.is_error and "products" in result.content


@pytest.mark.parametrize(
    ("token", "reason"),
    [(None, "missing credential"), ("not-the-credential-" + "y" * 20, "invalid credential")],
)
async def test_without_the_credential_omni2_gets_a_clear_refusal(
    mcp_url: str, token: str | None, reason: str
) -> None:
    toolbox = McpToolbox(mcp_url, auth_token=SecretStr(token) if token else None)
    try:
        with pytest.raises(ToolsUnavailable, match=f"unauthorized: {reason}"):
            await toolbox.catalogue("c-1", "alice")
    finally:
        await toolbox.aclose()


def test_an_mcp_url_needs_the_credential() -> None:
    settings = Omni2Settings(OMNI_JWT_SECRET=SECRET, mcp_url="http://mcp/mcp")  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="OMNI2_MCP_AUTH_TOKEN is not"):
        McpToolbox.from_settings(settings)
    settings = Omni2Settings(  # type: ignore[call-arg]
        OMNI_JWT_SECRET=SECRET, mcp_url="http://mcp/mcp", mcp_auth_token=SecretStr(TOKEN)
    )
    assert McpToolbox.from_settings(settings).configured
