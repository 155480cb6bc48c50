"""`trace diff` on hand-built traces: spans and layers in one only, matched by their place
under the message, and time differences per hop and per span name, largest first."""

from __future__ import annotations

import dataclasses

import pytest

from omni_trace.traces import TraceSpan, analyze_chain
from omni_trace.traces.diff import describe, diff_traces, render_diff, span_keys
from tests.omni_trace.recorded import message_spans, session_spans

MS = 1_000_000


def _with_tool(spans: list[TraceSpan], slower_model_ms: float) -> list[TraceSpan]:
    """The recorded tool-free message as if it had called a tool (OMNI2's tool span, the MCP
    server's below it) and a second model call, the first model call `slower_model_ms`
    longer; another trace id."""
    trace_id = "12" * 16
    turn = next(s for s in spans if s.name == "chat.turn")
    model = next(s for s in spans if s.name.startswith("chat "))
    out = [dataclasses.replace(s, trace_id=trace_id) for s in spans if s is not model]
    slow = dataclasses.replace(
        model, trace_id=trace_id, end_ns=model.end_ns + int(slower_model_ms * MS)
    )
    tool = dataclasses.replace(
        model,
        trace_id=trace_id,
        span_id="7" * 16,
        name="execute_tool database_query",
        start_ns=slow.end_ns,
        end_ns=slow.end_ns + 9 * MS,
    )
    mcp = dataclasses.replace(
        tool, span_id="8" * 16, parent_span_id=tool.span_id, service="mcp-tools", name="tools/call"
    )
    second = dataclasses.replace(
        model, trace_id=trace_id, span_id="9" * 16, start_ns=tool.end_ns, end_ns=tool.end_ns + MS
    )
    assert turn.span_id == model.parent_span_id
    return [*out, slow, tool, mcp, second]


def test_the_same_trace_has_no_difference() -> None:
    spans = message_spans()
    report = analyze_chain(spans, lambda _: session_spans())
    diff = diff_traces(spans, spans, report, report)
    assert diff.same_structure and not diff.layers_only_in_a and not diff.layers_only_in_b
    assert diff.hops and all(d.delta_ms == 0 for d in diff.hops if d.delta_ms is not None)
    assert all(d.delta_ms == 0 for d in diff.spans)
    assert "the same spans in the same places" in render_diff(diff)


def test_a_tool_call_shows_only_in_the_trace_that_made_it() -> None:
    a = message_spans()
    b = _with_tool(a, slower_model_ms=40)
    lookup = lambda _: session_spans()  # noqa: E731
    diff = diff_traces(a, b, analyze_chain(a, lookup), analyze_chain(b, lookup))
    assert not diff.only_in_a
    # Depth first, in time order.
    assert [describe(k) for k, _ in diff.only_in_b] == [
        "chat-client chat.message > dashboard-backend chat.relay > omni2 chat.turn"
        " > omni2 execute_tool database_query",
        "chat-client chat.message > dashboard-backend chat.relay > omni2 chat.turn"
        " > omni2 execute_tool database_query > mcp-tools tools/call",
        "chat-client chat.message > dashboard-backend chat.relay > omni2 chat.turn"
        " > omni2 chat omni2-offline-1 #2",
    ]
    assert diff.layers_only_in_b == ["mcp-tools"] and diff.layers_only_in_a == []
    # Per hop: the model's time grew by the slower call plus the second one (41 ms), and
    # tools (none in A) is on B's side only.
    hops = {d.what: d for d in diff.hops}
    assert hops["model"].delta_ms == pytest.approx(41.0)
    assert hops["tools"].a_ms is None and hops["tools"].b_ms == pytest.approx(9.0)
    assert diff.hops[0].what == "model"  # the largest difference first
    spans = {d.what: d for d in diff.spans}
    model = spans["omni2 chat omni2-offline-1"]
    assert (model.a_count, model.b_count) == (1, 2)
    assert diff.spans[0].what == "omni2 chat omni2-offline-1"
    assert spans["mcp-tools tools/call"].a_ms is None
    data = diff.as_dict()
    assert data["only_in_b"][0]["name"] == "execute_tool database_query"
    assert data["hops"][0]["what"] == "model" and data["same_structure"] is False
    text = render_diff(diff)
    assert "only in B:" in text and "layers only in B: mcp-tools" in text and "+41.0" in text


def test_spans_are_matched_by_place_not_by_id() -> None:
    spans = message_spans()
    renamed = [
        dataclasses.replace(
            s,
            trace_id="34" * 16,
            span_id=s.span_id[::-1],
            parent_span_id=s.parent_span_id[::-1] if s.parent_span_id else None,
        )
        for s in spans
    ]
    assert list(span_keys(spans)) == list(span_keys(renamed))
    assert diff_traces(spans, renamed).same_structure


def test_hostile_parents_end() -> None:
    base = message_spans()[0]
    cycle = [
        dataclasses.replace(base, span_id="a" * 16, parent_span_id="b" * 16),
        dataclasses.replace(base, span_id="b" * 16, parent_span_id="a" * 16),
        dataclasses.replace(base, span_id="c" * 16, parent_span_id="c" * 16),
    ]
    assert len(span_keys(cycle)) == 1  # only the self-parented one is reachable as a root
    deep = [dataclasses.replace(base, span_id=f"{0:016x}", parent_span_id=None)] + [
        dataclasses.replace(base, span_id=f"{i:016x}", parent_span_id=f"{i - 1:016x}")
        for i in range(1, 3000)
    ]
    assert len(span_keys(deep)) == 3000


def test_the_command_needs_both_traces(capsys: pytest.CaptureFixture[str]) -> None:
    from omni_trace.cli import main

    # An unreachable Jaeger: a clear error and exit 2, not a traceback.
    args = ["trace", "diff", "ab" * 16, "cd" * 16, "--json", "--jaeger", "http://127.0.0.1:9"]
    assert main(args) == 2
    assert "omni-trace:" in capsys.readouterr().err
