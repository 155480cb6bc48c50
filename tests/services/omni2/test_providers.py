"""Anthropic and OpenAI-compatible providers, replaying recorded HTTP exchanges (no network):
streaming, tool calls through the agent loop and the real MCP server, errors."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
from fastapi.testclient import TestClient
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pydantic import SecretStr

from otel.names import ATTRIBUTES, Attr, Flow, SpanName
from services.db.repository import flow as flow_repo
from services.db.repository import usage as usage_repo
from services.omni2.model import ChatMessage, ToolCall
from services.omni2.providers.anthropic import AnthropicModel, to_anthropic
from services.omni2.providers.openai import OpenAICompatibleModel
from tests.db import Admin
from tests.services.omni2.conftest import converse, gateway_headers

RECORDINGS = Path(__file__).parent / "recordings"
KEY = "sk-test-omni2-0000000000000000"
HTTPX_SCOPE = "opentelemetry.instrumentation.httpx"
CLAUDE = "claude-sonnet-4-5-20250929"


def recorded(name: str) -> httpx.Response:
    head, _, body = (RECORDINGS / f"{name}.http").read_text().partition("\n\n")
    status_line, *header_lines = head.splitlines()
    headers = [tuple(h.split(": ", 1)) for h in header_lines]
    return httpx.Response(int(status_line.split()[1]), headers=headers, content=body.encode())


class Replay:
    """An httpx client whose requests get the recorded responses, in order."""

    def __init__(self, *names: str) -> None:
        self.responses = [recorded(n) for n in names]
        self.requests: list[httpx.Request] = []

    def _handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.responses.pop(0)

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.MockTransport(self._handle))

    def body(self, i: int) -> dict[str, Any]:
        return dict(json.loads(self.requests[i].content))


def anthropic(replay: Replay) -> AnthropicModel:
    return AnthropicModel(CLAUDE, SecretStr(KEY), client=replay.client())


def openai(replay: Replay) -> OpenAICompatibleModel:
    return OpenAICompatibleModel("gpt-4o-mini", SecretStr(KEY), client=replay.client())


def http_spans_under_model_calls(spans: InMemorySpanExporter, models: list[Any]) -> None:
    """Each model call's request: one CLIENT span of the httpx instrumentation below it."""
    requests = [
        s
        for s in spans.get_finished_spans()
        if s.instrumentation_scope and s.instrumentation_scope.name == HTTPX_SCOPE
    ]
    assert sorted(r.parent.span_id for r in requests if r.parent) == sorted(
        m.context.span_id for m in models
    )
    for request in requests:
        assert request.name == "POST" and request.attributes is not None, request.name
        assert request.attributes["http.response.status_code"] == 200
        assert set(request.attributes) <= set(ATTRIBUTES), set(request.attributes) - set(ATTRIBUTES)


def no_key_in_spans(spans: InMemorySpanExporter) -> None:
    for span in spans.get_finished_spans():
        assert KEY not in json.dumps(dict(span.attributes or {}), default=str), span.name
        assert KEY not in (span.status.description or "")


def test_anthropic_streams_and_calls_tools_through_mcp(
    make_client: Callable[..., TestClient], admin: Admin, spans: InMemorySpanExporter
) -> None:
    replay = Replay("anthropic_tool_use", "anthropic_answer")
    client = make_client(model=anthropic(replay), model_name=CLAUDE)
    with client.websocket_connect("/ws/chat", headers=gateway_headers("bob")) as ws:
        ws.receive_json()
        reply, frames = converse(ws, "How many products are there?")
    assert reply == "Let me check the database.There are 6 products in the database."
    done = frames[-1]["result"]
    assert done["tools_used"] == ["database_query"] and done["tool_calls"] == 1
    assert (done["tokens_input"], done["tokens_output"]) == (472 + 598, 89 + 12)

    first, second = replay.body(0), replay.body(1)
    assert replay.requests[0].url == "https://api.anthropic.com/v1/messages"
    # The SDK's own way to send the key and the API version.
    assert replay.requests[0].headers["authorization"] == f"Bearer {KEY}"
    assert replay.requests[0].headers["anthropic-version"]
    assert replay.requests[0].headers["user-agent"].startswith("AsyncAnthropic/Python")
    assert first["stream"] is True and first["model"] == CLAUDE
    assert first["system"].startswith("You are OMNI2 Assistant")
    assert {t["name"] for t in first["tools"]} == {"database_query", "list_tables"}
    assert first["messages"] == [{"role": "user", "content": "How many products are there?"}]
    assistant, results = second["messages"][1:]
    assert assistant["content"][0] == {"type": "text", "text": "Let me check the database."}
    assert assistant["content"][1] == {
        "type": "tool_use",
        "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
        "name": "database_query",
        "input": {"sql": "SELECT COUNT(*) AS n FROM products"},
    }
    (result,) = results["content"]
    assert result["type"] == "tool_result" and result["is_error"] is False
    assert result["tool_use_id"] == "toolu_01T1x1fJ34qAmk2tNTrN7Up6"
    assert json.loads(result["content"])["rows"] == [[6]]

    models = [s for s in spans.get_finished_spans() if s.name == SpanName.model_call(CLAUDE)]
    assert [m.attributes and m.attributes[Attr.GEN_AI_FINISH_REASONS] for m in models] == [
        ("tool_calls",),
        ("stop",),
    ]
    assert models[0].attributes and models[0].attributes[Attr.GEN_AI_PROVIDER] == "anthropic"
    assert models[0].attributes[Attr.GEN_AI_RESPONSE_ID] == "msg_014p7gG3wDgGV9EUtLvnow3U"
    assert models[0].attributes[Attr.GEN_AI_INPUT_TOKENS] == 472
    assert models[0].attributes[Attr.SERVER_ADDRESS] == "api.anthropic.com"
    assert models[0].attributes[Attr.SERVER_PORT] == 443
    assert all(Attr.TIME_TO_FIRST_CHUNK in (m.attributes or {}) for m in models)
    http_spans_under_model_calls(spans, models)
    no_key_in_spans(spans)
    usage = admin(lambda s: usage_repo.usage_since(s, "bob", usage_repo.start_of_day()))
    assert usage[0] == 472 + 598 + 89 + 12


def test_openai_compatible_streams_and_calls_tools(
    make_client: Callable[..., TestClient], spans: InMemorySpanExporter
) -> None:
    replay = Replay("openai_tool_calls", "openai_answer")
    client = make_client(model=openai(replay), model_name="gpt-4o-mini")
    with client.websocket_connect("/ws/chat", headers=gateway_headers("bob")) as ws:
        ws.receive_json()
        reply, frames = converse(ws, "How many products are there?")
    assert reply == "There are 6 products in the database."
    done = frames[-1]["result"]
    assert done["tools_used"] == ["database_query"]
    assert (done["tokens_input"], done["tokens_output"]) == (187 + 236, 24 + 9)
    first, second = replay.body(0), replay.body(1)
    assert replay.requests[0].url == "https://api.openai.com/v1/chat/completions"
    assert replay.requests[0].headers["authorization"] == f"Bearer {KEY}"
    assert first["stream_options"] == {"include_usage": True}
    assert first["messages"][0]["role"] == "system"
    assert {t["function"]["name"] for t in first["tools"]} == {"database_query", "list_tables"}
    call, result = second["messages"][-2:]
    assert call["tool_calls"][0]["id"] == "call_Qk9vYB2cX7mN1pL4sT8wR3eZ"
    assert json.loads(call["tool_calls"][0]["function"]["arguments"]) == {
        "sql": "SELECT COUNT(*) AS n FROM products"
    }
    assert result["role"] == "tool" and result["tool_call_id"] == call["tool_calls"][0]["id"]
    assert json.loads(result["content"])["rows"] == [[6]]
    models = [s for s in spans.get_finished_spans() if s.name == SpanName.model_call("gpt-4o-mini")]
    assert len(models) == 2
    assert models[0].attributes and models[0].attributes[Attr.GEN_AI_RESPONSE_MODEL] == (
        "gpt-4o-mini-2024-07-18"
    )
    http_spans_under_model_calls(spans, models)
    no_key_in_spans(spans)


@pytest.mark.parametrize(
    ("make_model", "recordings", "code", "message", "detail", "tokens_before"),
    [
        (
            anthropic,
            ("anthropic_overloaded", "anthropic_answer"),
            "provider_overloaded",
            "The model provider is overloaded; try again shortly",
            "anthropic returned HTTP 529: Overloaded",
            "",
        ),
        (
            anthropic,
            ("anthropic_stream_error", "anthropic_answer"),
            "provider_overloaded",
            "The model provider is overloaded; try again shortly",
            "anthropic stream error (overloaded_error): Overloaded",
            "Hello",
        ),
        (
            openai,
            ("openai_bad_key", "openai_answer"),
            "provider_auth",
            "The model provider refused OMNI2's credentials",
            "openai returned HTTP 401: Incorrect API key provided: ***. "
            "You can find your API key at https://platform.openai.com/account/api-keys.",
            "",
        ),
    ],
)
def test_provider_errors_give_error_frames_spans_and_flow_events(
    make_client: Callable[..., TestClient],
    admin: Admin,
    spans: InMemorySpanExporter,
    make_model: Callable[[Replay], Any],
    recordings: tuple[str, ...],
    code: str,
    message: str,
    detail: str,
    tokens_before: str,
) -> None:
    model = make_model(Replay(*recordings))
    client = make_client(model=model, model_name=model.name)
    with client.websocket_connect("/ws/chat", headers=gateway_headers("carol")) as ws:
        ws.receive_json()
        reply, frames = converse(ws, "hello")
        _, after = converse(ws, "hello again")
    error = frames[-1]
    assert reply == tokens_before
    # The provider's words never reach the user: a fixed reason and code do.
    assert error == {"type": "error", "error": message, "code": code, "trace_id": error["trace_id"]}
    assert after[-1]["type"] == "done", "the connection stays usable"
    in_trace = [
        s for s in spans.get_finished_spans() if f"{s.context.trace_id:032x}" == error["trace_id"]
    ]
    (span,) = [s for s in in_trace if s.name == SpanName.model_call(model.name)]
    assert span.status.status_code.name == "ERROR" and span.status.description == detail
    assert span.attributes and span.attributes[Attr.ERROR_TYPE] == code
    (turn,) = [s for s in in_trace if s.name == SpanName.TURN]
    assert turn.status.description == f"model failed: {detail}"
    events = admin(lambda s: flow_repo.flow_events(s, trace_id=error["trace_id"]))
    failed = [e for e in events if e.status == "error"]
    assert [(e.kind, e.detail["error"]) for e in failed] == [
        (Flow.MODEL_CALL, detail),
        (Flow.ERROR, detail),
    ]
    no_key_in_spans(spans)


def test_consecutive_tool_results_share_one_user_turn() -> None:
    calls = (ToolCall("a", "list_tables", {}), ToolCall("b", "database_query", {"sql": "x"}))
    system, messages = to_anthropic(
        [
            ChatMessage("system", "be brief"),
            ChatMessage("user", "hi"),
            ChatMessage("assistant", "", tool_calls=calls),
            ChatMessage("tool", "t", tool_call_id="a", tool_name="list_tables"),
            ChatMessage("tool", "boom", tool_call_id="b", tool_name="x", is_error=True),
        ]
    )
    assert system == "be brief"
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]
    assert [(b["tool_use_id"], b["is_error"]) for b in messages[2]["content"]] == [
        ("a", False),
        ("b", True),
    ]
