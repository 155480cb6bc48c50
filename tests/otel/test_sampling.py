"""The server decides what is traced, once per connection; the client never does."""

from __future__ import annotations

from opentelemetry.context import Context
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, Decision

from otel.propagation import client_parent
from otel.sampling import ServerDecisionSampler, decide, decision_of, with_decision

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
    ctx, links = client_parent({"traceparent": PARENT}, keep=True, link=False)
    assert decision_of(ctx) is True and links == []
    ctx, links = client_parent({"traceparent": PARENT}, keep=False, link=True)
    assert decision_of(ctx) is False and len(links) == 1
    ctx, links = client_parent({"traceparent": "garbage"}, keep=True, link=True)
    assert decision_of(ctx) is True and links == []
