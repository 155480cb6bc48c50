"""Who decides what is traced: the server, once per connection, never the client.

The first hop we run (the dashboard) draws one decision per connection and puts it in the
context of every span it starts for that connection, the session trace and each message trace,
so a conversation is kept or dropped whole. `ServerDecisionSampler` (installed in every service
by `setup_tracing`) obeys that decision before anything else; without one it defers to the
sampler the standard `OTEL_TRACES_SAMPLER` variables configure. A client's trace flags never
reach a sampler: `otel.propagation.extract_untrusted` rewrites them.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence

from opentelemetry.context import Context, create_key, get_value, set_value
from opentelemetry.sdk.trace.sampling import (
    Decision,
    Sampler,
    SamplingResult,
    _get_from_env_or_default,
)
from opentelemetry.trace import Link, SpanKind
from opentelemetry.trace.span import TraceState
from opentelemetry.util.types import Attributes

_DECISION = create_key("omni-trace.sampling-decision")


def decide(ratio: float) -> bool:
    """One connection's decision: keep it with probability `ratio` (0..1)."""
    return ratio >= 1.0 or (ratio > 0.0 and random.random() < ratio)


def conversation_keep(conversation_id: str, ratio: float) -> bool:
    """A conversation's decision, the same in every process and every replica, and on every
    reconnect to it: its id hashed to a fraction in [0, 1), kept below `ratio`."""
    digest = hashlib.sha256(conversation_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < ratio


def with_decision(ctx: Context | None, keep: bool) -> Context:
    """`ctx` carrying the server's decision for every span started under it."""
    return set_value(_DECISION, keep, ctx)


def decision_of(ctx: Context | None) -> bool | None:
    value = get_value(_DECISION, ctx)
    return value if isinstance(value, bool) else None


class ServerDecisionSampler(Sampler):
    """The server's per-connection decision when there is one, else `inner`."""

    def __init__(self, inner: Sampler | None = None) -> None:
        self._inner = inner or _get_from_env_or_default()

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        keep = decision_of(parent_context)
        if keep is None:
            return self._inner.should_sample(
                parent_context, trace_id, name, kind, attributes, links, trace_state
            )
        # No trace state from the parent: a client's tracestate must not ride along.
        return SamplingResult(
            Decision.RECORD_AND_SAMPLE if keep else Decision.DROP, attributes, None
        )

    def get_description(self) -> str:
        return f"ServerDecisionSampler{{{self._inner.get_description()}}}"
