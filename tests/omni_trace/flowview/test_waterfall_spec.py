"""The waterfall's model and tool spans are the spec's (ChainSpec.model_spans, tool_spans),
decided by the flow view's API from the spec it serves (`Span.role`), not by names the page
knows: a stack whose spec names them otherwise gets them marked, and the default spec marks
what it always did. Over a served fake Jaeger, through the API as the page reads it."""

from __future__ import annotations

import re
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from starlette.testclient import TestClient

from omni_trace.flowview.api import create_app
from omni_trace.traces.jaeger import TraceSpan
from omni_trace.traces.spec import DEFAULT_SPEC, ChainSpec, load_spec
from tests.omni_trace.flowview.test_jaeger_http import JaegerServer, served
from tests.omni_trace.flowview.test_ledger import message

__all__ = ["served"]  # the fixture, used by name

LOCAL = "http://127.0.0.1"

# Another stack's names: its model calls recorded by a gateway of its own, its tool calls
# under another name than the GenAI convention's `execute_tool`.
CUSTOM_SPANS = """
model_spans:
  services: [llm-gateway]
  name: "llm.generate*"
tool_spans:
  services: [omni2]
  name: "tool.invoke *"
"""


def _custom_spec(tmp_path: Path) -> ChainSpec:
    """The default spec's layers, under another name, with the model and tool spans above:
    a file as a user writes one (`--spec FILE`)."""
    text = DEFAULT_SPEC.read_text()
    text = re.sub(r"^name: omni2$", "name: renamed-stack", text, count=1, flags=re.M)
    text = text[: text.index("model_spans:")] + CUSTOM_SPANS
    path = tmp_path / "renamed.yaml"
    path.write_text(text)
    return load_spec(path)


def _as(span: TraceSpan, service: str, name: str, **changes: Any) -> TraceSpan:
    """`span` recorded by another service (its resource says which) under another name."""
    resource = span.resource | {"service.name": service}
    return replace(span, service=service, name=name, resource=resource, **changes)


def _with_tool_call(spans: list[TraceSpan]) -> list[TraceSpan]:
    """The recorded message trace (one model call) with a tool call under OMNI2's turn, and
    the MCP server's own span under it (the tool call seen from below: not a tool call)."""
    turn = next(s for s in spans if (s.service, s.name) == ("omni2", "chat.turn"))
    model = next(s for s in spans if s.name.startswith("chat omni2"))
    tool = replace(
        model,
        span_id="00000000000000e1",
        parent_span_id=turn.span_id,
        name="execute_tool database_query",
        attributes={"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "database_query"},
        start_ns=model.end_ns,
        end_ns=model.end_ns + 40_000_000,
        events=(),
        links=(),
    )
    below = _as(
        tool,
        "mcp-tools",
        "tools/call database_query",
        span_id="00000000000000e2",
        parent_span_id=tool.span_id,
        start_ns=tool.start_ns + 5_000_000,
        end_ns=tool.end_ns - 5_000_000,
    )
    return [*spans, tool, below]


def _renamed(spans: list[TraceSpan]) -> list[TraceSpan]:
    """The same trace as the other stack records it: its model span by its gateway."""
    names = {"chat omni2-offline-1": ("llm-gateway", "llm.generate omni2-offline-1")}
    names["execute_tool database_query"] = ("omni2", "tool.invoke database_query")
    return [_as(s, *names[s.name]) if s.name in names else s for s in spans]


def _trace(served: JaegerServer, trace_id: str, spec: ChainSpec | None) -> dict[str, Any]:
    with TestClient(create_app(served.url, spec=spec), base_url=LOCAL) as api:
        config = api.get("/api/config")
        answer = api.get(f"/api/traces/{trace_id}")
    assert config.status_code == 200 and answer.status_code == 200, answer.text
    return {"config": config.json(), **answer.json()}


def _roles(found: dict[str, Any]) -> dict[tuple[str, str], str | None]:
    return {(s["service"], s["name"]): s["role"] for s in found["spans"]}


def test_the_default_spec_marks_omni2_s_model_and_tool_spans(served: JaegerServer) -> None:
    trace_id = served.fake.add(_with_tool_call(message(0, time.time() - 30)))
    found = _trace(served, trace_id, None)
    assert found["kind"] == "message" and found["config"]["spec"]["name"] == "omni2"
    assert _roles(found) == {
        ("chat-client", "chat.message"): None,
        ("dashboard-backend", "chat.relay"): None,
        ("omni2", "chat.turn"): None,
        ("omni2", "chat omni2-offline-1"): "model",
        ("omni2", "execute_tool database_query"): "tool",
        ("mcp-tools", "tools/call database_query"): None,
    }
    # The marks are the spans the audit times as the model's and the tools'.
    marked = {
        r: sum(s["duration_ms"] for s in found["spans"] if s["role"] == r)
        for r in ("model", "tool")
    }
    assert found["chain"]["hops_ms"]["model"] == marked["model"]
    assert found["chain"]["hops_ms"]["tools"] == marked["tool"]


def test_a_spec_of_its_own_marks_its_own_model_and_tool_spans(
    served: JaegerServer, tmp_path: Path
) -> None:
    spec = _custom_spec(tmp_path)
    trace_id = served.fake.add(_renamed(_with_tool_call(message(1, time.time() - 30))))
    found = _trace(served, trace_id, spec)
    assert found["config"]["spec"]["name"] == "renamed-stack"
    assert found["kind"] == "message" and not found["chain"]["broken"]
    assert _roles(found) == {
        ("chat-client", "chat.message"): None,
        ("dashboard-backend", "chat.relay"): None,
        ("omni2", "chat.turn"): None,
        ("llm-gateway", "llm.generate omni2-offline-1"): "model",
        ("omni2", "tool.invoke database_query"): "tool",
        ("mcp-tools", "tools/call database_query"): None,
    }
    # The turn's model and tool calls are the same spans.
    assert len(found["turn"]["model_calls"]) == 1 and len(found["turn"]["tool_calls"]) == 1
    assert found["chain"]["hops_ms"]["model"] is not None
    assert found["chain"]["hops_ms"]["tools"] is not None

    # The same trace judged by the default spec: none of its names is the default's.
    default = _trace(served, trace_id, None)
    assert {role for role in _roles(default).values()} == {None}
    assert default["turn"]["model_calls"] == [] and default["turn"]["tool_calls"] == []
