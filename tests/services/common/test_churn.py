"""What one user's churn may cost the trace store: connect rate, refusal budget, holds."""

from __future__ import annotations

from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel.names import Attr, SpanName
from services.common.churn import (
    Churn,
    ConnectRate,
    Holds,
    RefusalLedger,
    retry_after,
)
from services.common.protocol import CloseCode


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _churn(clock: Clock) -> Churn:
    return Churn(
        ConnectRate(per_minute=20, burst=30, clock=clock),
        RefusalLedger(per_minute=10, burst=10, flush_s=5, clock=clock),
        Holds(clock),
    )


def test_connects_past_the_burst_are_refused_until_the_rate_refills() -> None:
    clock = Clock()
    rate = ConnectRate(per_minute=20, burst=30, clock=clock)
    assert all(rate.allow("bob") for _ in range(30))
    assert not rate.allow("bob")
    assert rate.allow("alice"), "one user's connects do not spend another's"
    clock.now = 3.0  # 20 a minute: one every 3 s
    assert rate.allow("bob")
    assert not rate.allow("bob")
    assert rate.reason == "too many connections: at most 20 a minute (30 at once)"


def test_refused_connects_are_traced_within_the_budget_then_counted_on_one_span(
    spans: InMemorySpanExporter,
) -> None:
    clock = Clock()
    churn = _churn(clock)
    verdicts = [churn.check_connect("bob") for _ in range(30 + 25)]
    assert verdicts[:30] == [None] * 30
    refused = [v for v in verdicts if v is not None]
    assert all(v.refusal.code == CloseCode.TOO_MANY_CONNECTIONS for v in refused)
    assert [v.traced for v in refused] == [True] * 10 + [False] * 15
    churn.refusals.count("bob", messages=4)
    assert spans.get_finished_spans() == ()  # nothing until the flush
    assert churn.refusals.flush() == 1
    (span,) = spans.get_finished_spans()
    assert span.name == SpanName.REFUSED
    assert span.parent is None, "a trace of its own, not in anyone's message trace"
    assert span.attributes is not None
    assert span.attributes[Attr.USER_ID] == "bob"
    assert span.attributes[Attr.CONNECTS_REFUSED] == 15
    assert span.attributes[Attr.MESSAGES_REFUSED] == 4
    assert churn.refusals.flush() == 0, "counted once"


def test_memory_is_bounded_in_users() -> None:
    clock = Clock()
    rate = ConnectRate(per_minute=1, burst=1, clock=clock, max_keys=100)
    for n in range(1000):
        assert rate.allow(f"user-{n}")
    assert len(rate._buckets._state) == 100


def test_a_hold_answers_with_the_same_refusal_until_it_ends() -> None:
    clock = Clock()
    holds = Holds(clock)
    refusal = {
        "type": "error",
        "error": "Rate limit exceeded: 30 messages per minute",
        "code": "rate_limited",
        "trace_id": "ab" * 16,
        "retry_after_s": 40.0,
    }
    assert holds.refusal("bob") is None
    holds.hold("bob", retry_after(refusal), refusal)
    clock.now = 10.0
    answer = holds.refusal("bob")
    assert answer is not None
    assert answer["code"] == "rate_limited" and answer["error"] == refusal["error"]
    assert "trace_id" not in answer, "the held message had no trace of its own"
    assert answer["retry_after_s"] == 30.0
    assert holds.refusal("alice") is None
    clock.now = 40.0
    assert holds.refusal("bob") is None


def test_retry_after_is_read_defensively() -> None:
    for frame in ({}, {"retry_after_s": "5"}, {"retry_after_s": True}, {"retry_after_s": None}):
        assert retry_after(frame) == 0.0
    assert retry_after({"retry_after_s": float("nan")}) == 0.0
    holds = Holds(Clock())
    holds.hold("bob", -1.0, {"type": "error"})
    holds.hold("bob", float("nan"), {"type": "error"})
    assert holds.refusal("bob") is None
