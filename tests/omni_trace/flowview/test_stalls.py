"""The flow view's /metrics counts stalled streams by hop, each message judged once."""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

from omni_trace.flowview.metrics import AuditCounts
from omni_trace.traces.jaeger import TraceSpan
from tests.omni_trace.flowview.test_ledger import Clock, FakeJaeger, ledger, message
from tests.omni_trace.traces.test_stream_stall import stats


def with_stats(spans: list[TraceSpan], **per_span: dict[str, Any]) -> list[TraceSpan]:
    by_name = {"chat.relay": "relay", "chat.turn": "turn"}
    return [
        replace(s, attributes=s.attributes | per_span[by_name[s.name]])
        if by_name.get(s.name) in per_span
        else s
        for s in spans
    ]


def samples(counts: AuditCounts) -> dict[str, str]:
    text = counts.exposition()
    return dict(re.findall(r"^(omni_trace_audit_\S+) (\S+)$", text, re.M))


def test_stalls_are_counted_by_the_hop_that_held_the_tokens_once_each() -> None:
    jaeger, clock = FakeJaeger(), Clock()
    audit = ledger(jaeger, clock)
    jaeger.add(with_stats(message(0, clock.now - 20), relay=stats(410.0), turn=stats(12.0)))
    jaeger.add(with_stats(message(1, clock.now - 20), relay=stats(13.0), turn=stats(12.0)))
    jaeger.add(message(2, clock.now - 20))  # no stats at all (an older stack)
    found = samples(AuditCounts(audit.update()))
    assert found['omni_trace_audit_stalls_total{hop="dashboard"}'] == "1"
    assert found['omni_trace_audit_stalls_total{hop="omni2"}'] == "0"
    assert found['omni_trace_audit_stalls{hop="dashboard",window_s="900"}'] == "1"
    # Judged once: a later update does not count it again.
    clock.now += 30
    counts = AuditCounts(audit.update())
    assert samples(counts)['omni_trace_audit_stalls_total{hop="dashboard"}'] == "1"
    assert "# TYPE omni_trace_audit_stalls_total counter" in counts.exposition()
