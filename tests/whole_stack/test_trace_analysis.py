"""The critical path and `trace diff` on real messages of the shared stack: the path runs
through each layer's message span down to OMNI2's model and persistence; a tool-calling
message differs from a tool-free one by its tool spans."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from omni_trace.cli import main
from omni_trace.flowview.api import create_app
from omni_trace.stack import Stack
from omni_trace.stack.plugin import ChatFactory
from omni_trace.traces import JaegerClient, wait_for_chain
from omni_trace.traces.critical_path import critical_path
from omni_trace.traces.diff import diff_traces
from otel.names import Service, SpanName

pytestmark = pytest.mark.stack


@pytest.fixture
async def messages(omni_chat: ChatFactory, omni_jaeger: JaegerClient) -> dict[str, str]:
    """A tool-free and a tool-calling message of one conversation, their chains whole."""
    async with omni_chat("alice") as conversation:
        plain = await conversation.send("Hello, critical path")
        tool = await conversation.send("How many products per category are in the database?")
    assert plain.ok and tool.ok, (plain.frame, tool.frame)
    found = {"plain": plain.trace_id, "tool": tool.trace_id}
    for trace_id in found.values():
        report = wait_for_chain(omni_jaeger, trace_id)
        assert report.whole, report.problems
    return found


@pytest.fixture(scope="module")
def api(stack: Stack) -> Iterator[TestClient]:
    with TestClient(create_app(stack.info.jaeger_query_url), base_url="http://127.0.0.1") as client:
        yield client


def test_the_path_runs_through_every_layer_down_to_the_model_and_persistence(
    stack: Stack,
    messages: dict[str, str],
    omni_jaeger: JaegerClient,
    api: TestClient,
    capsys: pytest.CaptureFixture[str],
) -> None:
    spans = omni_jaeger.get_trace(messages["tool"])
    path = critical_path(spans)
    by_id = {s.span_id: s for s in spans}
    on_path = [(by_id[i].service, by_id[i].name) for i in path.span_ids]
    # Each layer's message span, outermost first, then what OMNI2 did under its turn.
    layers = [
        (Service.CHAT_CLIENT, SpanName.MESSAGE),
        (Service.DASHBOARD, SpanName.RELAY),
        (Service.OMNI2, SpanName.TURN),
    ]
    assert on_path[:3] == layers, on_path
    root = by_id[path.span_ids[0]]
    assert path.start_ns == root.start_ns and path.end_ns == root.end_ns
    models = [n for s, n in on_path if s == Service.OMNI2 and n.startswith("chat ")]
    assert len(models) == 2, on_path  # the call that asked for the tool, and the answer
    assert (Service.OMNI2, "execute_tool database_query") in on_path
    assert (Service.OMNI2, SpanName.PERSIST) in on_path
    # The segments tile the message: no time counted twice, none left out.
    assert sum(s.end_ns - s.start_ns for s in path.segments) == root.end_ns - root.start_ns
    # The answer's streaming model call is the longest stretch of a streamed answer.
    longest = max(path.segments, key=lambda s: s.end_ns - s.start_ns)
    assert longest.name.startswith("chat ") and longest.service == Service.OMNI2

    # trace show: the path with its shares, the spans on it marked in the waterfall.
    jaeger = ["--jaeger", stack.info.jaeger_query_url]
    assert main(["trace", "show", messages["tool"], "--width", "120", *jaeger]) == 0
    out = capsys.readouterr().out
    assert "critical path (" in out and "%" in out
    assert any(line.startswith("*") and "chat.turn" in line for line in out.splitlines())
    assert main(["trace", "show", messages["tool"], "--json", *jaeger]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["critical_path"]["span_ids"] == path.span_ids
    assert shown["chain"]["trace_id"] == messages["tool"]

    # The flow view's trace API carries the same path for the waterfall.
    answer = api.get(f"/api/traces/{messages['tool']}")
    assert answer.status_code == 200, answer.text
    assert answer.json()["critical_path"]["span_ids"] == path.span_ids


def test_a_tool_calling_message_differs_by_its_tool_spans(
    stack: Stack,
    messages: dict[str, str],
    omni_jaeger: JaegerClient,
    api: TestClient,
    capsys: pytest.CaptureFixture[str],
) -> None:
    plain, tool = messages["plain"], messages["tool"]
    diff = diff_traces(omni_jaeger.get_trace(plain), omni_jaeger.get_trace(tool))
    assert not diff.only_in_a, diff.only_in_a
    names = {(span.service, span.name) for _, span in diff.only_in_b}
    assert (Service.OMNI2, "execute_tool database_query") in names
    assert (Service.MCP_TOOLS, "tools/call database_query") in names
    assert diff.layers_only_in_b == [Service.MCP_TOOLS]

    args = ["trace", "diff", plain, tool, "--jaeger", stack.info.jaeger_query_url]
    assert main([*args, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["layers_only_in_b"] == [Service.MCP_TOOLS] and not data["only_in_a"]
    hops = {h["what"]: h for h in data["hops"]}
    assert hops["tools"]["a_ms"] is None and hops["tools"]["b_ms"] > 0
    assert hops["model"]["delta_ms"] is not None
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "only in B:" in text and "execute_tool database_query" in text

    answer = api.get("/api/diff", params={"a": plain, "b": tool})
    assert answer.status_code == 200, answer.text
    assert answer.json()["layers_only_in_b"] == [Service.MCP_TOOLS]
    assert api.get("/api/diff", params={"a": plain, "b": "nope"}).status_code == 400
    assert api.get("/api/diff", params={"a": plain, "b": "0" * 32}).status_code == 404
