"""The critical path on hand-built traces: siblings, overlaps, gaps, a child that outlives its
parent, a tool call between two model calls."""

from __future__ import annotations

import itertools

from omni_trace.traces import SpanLink, TraceSpan
from omni_trace.traces.critical_path import critical_path, render_path

MS = 1_000_000
TRACE = "ab" * 16


def span(
    span_id: str, parent: str | None, start_ms: float, end_ms: float, name: str = "", **kw: str
) -> TraceSpan:
    return TraceSpan(
        trace_id=TRACE,
        span_id=span_id,
        parent_span_id=parent,
        name=name or span_id,
        service=kw.get("service", "svc"),
        kind="INTERNAL",
        start_ns=int(start_ms * MS),
        end_ns=int(end_ms * MS),
        attributes={},
    )


def steps(spans: list[TraceSpan], root: str | None = None) -> list[tuple[str, float, float]]:
    """(span id, start ms, end ms) of each segment."""
    return [
        (s.span_id, s.start_ns / MS, s.end_ns / MS) for s in critical_path(spans, root).segments
    ]


def test_a_lone_span_is_its_own_path() -> None:
    path = critical_path([span("root", None, 0, 10)])
    assert steps([span("root", None, 0, 10)]) == [("root", 0, 10)]
    assert path.total_ns == 10 * MS and path.span_ids == ["root"]


def test_gaps_between_sequential_children_are_the_parents_own_time() -> None:
    spans = [span("root", None, 0, 100), span("a", "root", 10, 40), span("b", "root", 60, 90)]
    assert steps(spans) == [
        ("root", 0, 10),
        ("a", 10, 40),
        ("root", 40, 60),
        ("b", 60, 90),
        ("root", 90, 100),
    ]


def test_the_segments_cover_the_root_once_without_overlap() -> None:
    spans = [
        span("root", None, 0, 100),
        span("a", "root", 5, 70),
        span("b", "root", 20, 95),
        span("a1", "a", 6, 30),
        span("b1", "b", 50, 120),  # outlives its parent
    ]
    segments = critical_path(spans).segments
    assert segments[0].start_ns == 0 and segments[-1].end_ns == 100 * MS
    for earlier, later in itertools.pairwise(segments):
        assert earlier.end_ns == later.start_ns
    assert sum(s.end_ns - s.start_ns for s in segments) == 100 * MS


def test_of_overlapping_siblings_the_last_to_end_owns_the_time_back_to_its_start() -> None:
    # a [10, 60] and b [50, 90] overlap: b owns 50..90, a only the time before b started.
    spans = [span("root", None, 0, 100), span("a", "root", 10, 60), span("b", "root", 50, 90)]
    assert steps(spans) == [
        ("root", 0, 10),
        ("a", 10, 50),
        ("b", 50, 90),
        ("root", 90, 100),
    ]


def test_a_sibling_inside_the_one_that_ends_last_is_not_on_the_path() -> None:
    # c runs wholly while b runs (parallel, shorter): it decides nothing.
    spans = [
        span("root", None, 0, 100),
        span("b", "root", 10, 90),
        span("c", "root", 20, 50),
    ]
    assert steps(spans) == [("root", 0, 10), ("b", 10, 90), ("root", 90, 100)]
    assert "c" not in critical_path(spans).span_ids


def test_a_child_that_outlives_its_parent_is_clipped_to_it() -> None:
    spans = [
        span("root", None, 0, 100),
        span("mid", "root", 20, 60),
        span("late", "mid", 40, 150),  # ends after both its parent and the root
        span("early", "mid", 10, 30),  # starts before its parent (another clock)
    ]
    assert steps(spans) == [
        ("root", 0, 20),
        ("early", 20, 30),
        ("mid", 30, 40),
        ("late", 40, 60),
        ("root", 60, 100),
    ]


def test_a_tool_call_between_two_model_calls() -> None:
    # A streaming turn as OMNI2 records it: checks, a model call that asks for a tool, the
    # tool (its MCP call below it), the second model call that streams the answer, the
    # persistence; the relay and the client above it end after the turn.
    spans = [
        span("msg", None, 0, 1000, "chat.message", service="chat-client"),
        span("relay", "msg", 2, 995, "chat.relay", service="dashboard-backend"),
        span("turn", "relay", 4, 990, "chat.turn", service="omni2"),
        span("checks", "turn", 5, 11, "checks", service="omni2"),
        span("m1", "turn", 12, 30, "chat offline-1", service="omni2"),
        span("tool", "turn", 30, 130, "execute_tool database_query", service="omni2"),
        span("mcp-client", "tool", 32, 120, "tools/call database_query", service="omni2"),
        span("mcp", "mcp-client", 35, 110, "tools/call database_query", service="mcp-tools"),
        span("m2", "turn", 131, 960, "chat offline-1", service="omni2"),
        span("persist", "turn", 962, 985, "chat.persist", service="omni2"),
    ]
    path = critical_path(spans)
    assert path.span_ids == [
        "msg",
        "relay",
        "turn",
        "checks",
        "m1",
        "tool",
        "mcp-client",
        "mcp",
        "m2",
        "persist",
    ]
    on_path = path.time_on_path_ms()
    assert on_path["m2"] == 829 and on_path["mcp"] == 75 and on_path["tool"] == 12
    assert on_path["msg"] == 2 + 5 and on_path["turn"] == 1 + 1 + 1 + 2 + 5
    assert path.as_dict()["segments"][0]["service"] == "chat-client"
    shares = sum(s["share"] for s in path.as_dict()["segments"])
    assert abs(shares - 1) < 1e-9
    text = render_path(path)
    assert "82.9%" in text and "mcp-tools" in text and "execute_tool database_query" in text


def test_links_into_other_traces_do_not_count() -> None:
    root = span("root", None, 0, 100)
    linked = TraceSpan(
        **{**span("turn", "root", 10, 50).__dict__, "links": (SpanLink("cd" * 16, "ef" * 8),)}
    )
    # The linked trace's spans, even handed in with this one's, are not this trace's time.
    stranger = TraceSpan(**{**span("ef" * 8, "turn", 20, 40).__dict__, "trace_id": "cd" * 16})
    expected = [("root", 0, 10), ("turn", 10, 50), ("root", 50, 100)]
    assert steps([root, linked]) == expected
    assert steps([root, linked, stranger]) == expected


def test_the_root_is_the_longest_span_without_a_parent_here() -> None:
    # The client's span is not here (not traced): its child roots the path, and an orphan
    # elsewhere does not replace it.
    spans = [
        span("relay", "client-span-not-here", 0, 50),
        span("turn", "relay", 5, 45),
        span("orphan", "gone", 10, 20),
    ]
    assert critical_path(spans).root_span_id == "relay"
    assert steps(spans, "turn") == [("turn", 5, 45)]


def test_hostile_traces_end() -> None:
    # A parent cycle, a span that is its own parent, repeated ids, no spans at all.
    spans = [
        span("a", "b", 0, 10),
        span("b", "a", 1, 9),
        span("c", "c", 2, 3),
        span("c", "a", 2, 8),
    ]
    path = critical_path(spans)
    assert path.segments and path.total_ns == 10 * MS
    assert critical_path([]).segments == () and render_path(critical_path([])).endswith(
        "(no spans)"
    )
    deep = [span("s0", None, 0, 1000)] + [
        span(f"s{i}", f"s{i - 1}", i, 1000 - i) for i in range(1, 600)
    ]
    assert sum(s.end_ns - s.start_ns for s in critical_path(deep).segments) == 1000 * MS
