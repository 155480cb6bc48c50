"""Streaming per hop: which layer held the tokens of a message.

Each layer that relays tokens puts on its message span the gaps between token frames as it
saw them (`chat.stream.*`, written by otel.stream). A layer's longest gap minus the longest
gap of the layer below it (the next one inward with stats) is what that hop added; the hop
that added the most, past a threshold, is named: "the dashboard held tokens for 180 ms at
2.3 s". The innermost layer (the model's own pace) has nothing below it and is never named.

A public layer's stats (the browser's, the chat client's) are the client's word: they are
shown, marked so, but never name the stalling hop (nor count towards the flow view's
`/metrics`): a client must not be able to make the audit blame anyone.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from itertools import pairwise
from typing import Any

# The attribute keys (otel/names.py Attr.STREAM_*; tests/omni_trace keep the two equal).
GAPS = "chat.stream.gaps"
GAP_P50 = "chat.stream.gap_p50_ms"
GAP_P95 = "chat.stream.gap_p95_ms"
GAP_MAX = "chat.stream.gap_max_ms"
GAP_MAX_AT = "chat.stream.gap_max_at_ms"
FIRST_TO_LAST = "chat.stream.first_to_last_ms"

# A hop is named when it added at least this much to the longest gap (ms), and its longest
# gap is at least STALL_RATIO times the layer below's: 50 ms is a visible hitch in a stream
# (a frame at 60 Hz is 17 ms; OS scheduling and GC pauses on a busy host stay below it), and
# the ratio keeps a slow model's jitter (200 ms gaps, 260 ms seen above) from being a stall.
DEFAULT_STALL_MS = 50.0
STALL_RATIO = 2.0

# Longer than any message could last: a value past it is not a measurement.
_MAX_MS = 86_400_000.0


def _number(value: Any) -> float | None:
    """A finite, non-negative number of a span attribute (a client may send anything)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    value = float(value)
    return value if math.isfinite(value) and 0 <= value <= _MAX_MS else None


@dataclass(frozen=True)
class LayerStream:
    """One layer's stream stats, from its message span (milliseconds)."""

    gaps: int
    p50_ms: float
    p95_ms: float
    max_ms: float
    max_at_ms: float
    first_to_last_ms: float
    public: bool = False  # the client's word

    @classmethod
    def from_attributes(
        cls, attributes: Mapping[str, Any], public: bool = False
    ) -> LayerStream | None:
        """None unless every stat is there and sane (ordered, within bounds)."""
        values = [
            _number(attributes.get(key))
            for key in (GAPS, GAP_P50, GAP_P95, GAP_MAX, GAP_MAX_AT, FIRST_TO_LAST)
        ]
        if any(v is None for v in values):
            return None
        gaps, p50, p95, top, at, first_to_last = (float(v or 0) for v in values)
        if gaps < 1 or gaps != int(gaps) or not p50 <= p95 <= top <= first_to_last:
            return None
        return cls(int(gaps), p50, p95, top, at, first_to_last, public)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Stall:
    """The hop that held the stream: `layer` added `added_ms` to the longest gap of `below`."""

    layer: str
    below: str
    added_ms: float
    max_ms: float
    below_max_ms: float
    at_ms: float  # when the layer's longest gap began, from its message span's start

    @property
    def description(self) -> str:
        return (
            f"the {self.layer} held tokens for {self.added_ms:.0f} ms at {self.at_ms / 1000:.1f} s"
        )

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "description": self.description}


def judge_stall(
    streams: Mapping[str, LayerStream],
    order: Sequence[str],
    stall_ms: float = DEFAULT_STALL_MS,
    ratio: float = STALL_RATIO,
) -> Stall | None:
    """The hop whose added stall is largest, if over the threshold. `order`: the layers
    outermost first; each is compared with the next one inward that has stats."""
    present = [name for name in order if name in streams]
    best: Stall | None = None
    for outer, inner in pairwise(present):
        above, below = streams[outer], streams[inner]
        if above.public:
            continue
        added = above.max_ms - below.max_ms
        if added < stall_ms or above.max_ms < ratio * below.max_ms:
            continue
        if best is None or added > best.added_ms:
            best = Stall(outer, inner, added, above.max_ms, below.max_ms, above.max_at_ms)
    return best


def added_by_layer(streams: Mapping[str, LayerStream], order: Sequence[str]) -> dict[str, float]:
    """Each layer's longest gap minus the layer below's (ms), for layers with one below."""
    present = [name for name in order if name in streams]
    return {
        outer: streams[outer].max_ms - streams[inner].max_ms for outer, inner in pairwise(present)
    }


def render_streams(
    streams: Mapping[str, LayerStream], order: Sequence[str], stall: Stall | None
) -> str:
    """Each layer's stream stats, what each hop added, and the verdict (`trace show`)."""
    added = added_by_layer(streams, order)
    lines = ["stream (gaps between token frames, ms):"]
    for name in (n for n in order if n in streams):
        s = streams[name]
        line = (
            f"  {name:<10} {s.gaps:>5} gaps  p50 {s.p50_ms:.1f}  p95 {s.p95_ms:.1f}  "
            f"max {s.max_ms:.1f} at {s.max_at_ms / 1000:.1f} s  first-to-last "
            f"{s.first_to_last_ms:.1f}"
        )
        if name in added:
            line += f"  added {added[name]:+.1f}"
        if s.public:
            line += "  (the client's word)"
        lines.append(line)
    lines.append(f"stall: {stall.description}" if stall else "stall: none")
    return "\n".join(lines)
