"""Chain analysis, audit output and the waterfall on recorded traces."""

from __future__ import annotations

import json

from omni_trace.traces.audit import (
    AuditQuery,
    exit_code,
    render_json,
    render_table,
    sampling_note,
    summary,
)
from omni_trace.traces.chain import HOPS, analyze_chain, session_closed_and_whole
from omni_trace.traces.waterfall import render_waterfall
from tests.omni_trace.recorded import message_spans, session_spans


def test_whole_chain_has_every_layer_and_hop() -> None:
    report = analyze_chain(message_spans(), lambda _: session_spans())
    assert not report.broken and not report.errors
    assert all(report.layers.values())
    assert report.user_id == "alice" and report.conversation_id
    # Recorded before OMNI2 marked its first token with an event: no ttft_omni2 for it.
    for hop in (h for h in HOPS if h not in ("tools", "ttft_omni2")):
        assert report.hops[hop] is not None and report.hops[hop] >= 0  # type: ignore[operator]
    assert report.hops["tools"] is None  # no tool was called
    assert report.hops["ttft_omni2"] is None


def test_broken_chain_reasons_and_exit_codes() -> None:
    no_omni2 = [s for s in message_spans() if s.service != "omni2"]
    broken = analyze_chain(no_omni2, lambda _: session_spans())
    whole = analyze_chain(message_spans(), lambda _: session_spans())
    assert broken.problems == ["missing layer omni2"]
    table = render_table([whole, broken])
    assert "CDTO" in table and "CD--" in table and "BROKEN: missing layer omni2" in table
    assert (
        summary([whole, broken]) == "2 message(s): 1 whole, 1 broken chain(s), 0 with error spans"
    )
    found = json.loads(render_json([whole, broken]))
    assert (found["kept"], found["broken"], found["sampled_out"]) == (2, 1, 0)
    assert exit_code([whole], AuditQuery(), allow_errors=False) == 0
    assert exit_code([whole, broken], AuditQuery(), allow_errors=False) == 1
    assert exit_code([], AuditQuery(conversation_id="c"), allow_errors=False) == 1
    assert exit_code([], AuditQuery(), allow_errors=False) == 0


def test_session_completeness_waits_for_traefiks_entry_span() -> None:
    session = session_spans()
    assert session_closed_and_whole(session)
    assert not session_closed_and_whole([s for s in session if s.name != "GET"])


def test_waterfall_rows_and_scale() -> None:
    lines = render_waterfall(message_spans(), width=100).splitlines()
    assert lines[0].startswith("trace ")
    assert len(lines) == 5
    assert all(line.endswith(" ms") and "█" in line for line in lines[1:])
    assert all(len(line) <= 100 for line in lines[1:])


def test_sampled_out_conversations_are_reported_not_broken() -> None:
    query = AuditQuery(conversation_id="c-1")
    # Nothing found for a conversation: no trace at all is a failure, sampled out is not.
    assert exit_code([], query, allow_errors=False) == 1
    assert exit_code([], query, allow_errors=False, sampled_out=["c-1"]) == 0
    found = json.loads(render_json([], sampled_out=["c-1"]))
    assert found["sampled_out_conversations"] == ["c-1"] and found["broken"] == 0
    assert (found["kept"], found["sampled_out"]) == (0, 1)
    assert "1 conversation(s) sampled out" in sampling_note(["c-1"])
    assert sampling_note([]) == ""
