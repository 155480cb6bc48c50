"""The server decides what is traced, once per connection; the client never does."""

from __future__ import annotations

from opentelemetry.context import Context
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, Decision

from otel.propagation import client_parent
from otel.sampling import (
    ServerDecisionSampler,
    conversation_keep,
    decide,
    decision_of,
    with_decision,
)

PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"


def test_the_decision_in_the_context_wins_over_the_configured_sampler() -> None:
    sampler = ServerDecisionSampler(ALWAYS_OFF)
    keep = sampler.should_sample(with_decision(Context(), True), 1, "s")
    drop = sampler.should_sample(with_decision(Context(), False), 1, "s")
    assert keep.decision is Decision.RECORD_AND_SAMPLE
    assert drop.decision is Decision.DROP
    # Without a decision, the configured sampler (OTEL_TRACES_SAMPLER) decides.
    assert sampler.should_sample(Context(), 1, "s").decision is Decision.DROP


def test_ratios() -> None:
    assert decide(1.0) and not decide(0.0)
    kept = sum(decide(0.5) for _ in range(2000))
    assert 800 < kept < 1200


def test_client_parent_carries_the_decision_whatever_the_client_says() -> None:
    parent = client_parent({"traceparent": PARENT}, keep=True, link=False)
    assert decision_of(parent.context) is True and parent.links == []
    parent = client_parent({"traceparent": PARENT}, keep=False, link=True)
    assert decision_of(parent.context) is False and len(parent.links) == 1
    parent = client_parent({"traceparent": "garbage"}, keep=True, link=True)
    assert decision_of(parent.context) is True and parent.links == []


def test_a_conversation_decision_is_the_same_everywhere_and_follows_the_ratio() -> None:
    ids = [f"conversation-{n}" for n in range(4000)]
    kept = [c for c in ids if conversation_keep(c, 0.25)]
    assert 0.22 < len(kept) / len(ids) < 0.28
    # A pure function of the id: every replica, and every reconnect, decides alike.
    assert kept == [c for c in ids if conversation_keep(c, 0.25)]
    # A larger ratio keeps what a smaller one kept.
    assert set(kept) <= {c for c in ids if conversation_keep(c, 0.5)}
    assert all(conversation_keep(c, 1.0) for c in ids[:50])
    assert not any(conversation_keep(c, 0.0) for c in ids[:50])
