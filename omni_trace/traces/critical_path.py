"""The critical path of one trace: which spans, in order, make up its total time.

The well-known walk (Jaeger's): start at the root's end and go back in time. At each point
the parent hands the time to the child that finished last before that point (a child still
running at that point counts up to it); from that child's start on, the walk continues with
the children that ended before it. A gap where no child runs is the parent's own (self)
time. Children are clipped to their parent's interval (one that outlives its parent counts
only until the parent's end), so overlapping siblings never count twice: the one that ends
last owns the time back to its start, an earlier sibling only the time before that.

Only parent/child relations count: a link into another trace (the session trace) is not a
part of this trace's time. Pure functions over `TraceSpan`s; nothing is read from Jaeger.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from omni_trace.traces.jaeger import TraceSpan

# Deeper than any real trace; a hostile one deeper still counts its spans' time as their own.
MAX_DEPTH = 256


@dataclass(frozen=True)
class Segment:
    """A stretch of the path: `span_id`'s own time from `start_ns` to `end_ns`."""

    span_id: str
    service: str
    name: str
    start_ns: int
    end_ns: int

    @property
    def duration_ms(self) -> float:
        return (self.end_ns - self.start_ns) / 1e6

    def as_dict(self, total_ns: int) -> dict[str, Any]:
        return {
            "span_id": self.span_id,
            "service": self.service,
            "name": self.name,
            "start_unix_ns": self.start_ns,
            "end_unix_ns": self.end_ns,
            "duration_ms": self.duration_ms,
            "share": (self.end_ns - self.start_ns) / total_ns if total_ns else 0.0,
        }


@dataclass(frozen=True)
class CriticalPath:
    """The path's segments in time order, from the root's start to its end."""

    root_span_id: str | None
    start_ns: int
    end_ns: int
    segments: tuple[Segment, ...]

    @property
    def total_ns(self) -> int:
        return self.end_ns - self.start_ns

    @property
    def span_ids(self) -> list[str]:
        """The spans on the path, each once, in the order the path first reaches them."""
        return list(dict.fromkeys(s.span_id for s in self.segments))

    def time_on_path_ms(self) -> dict[str, float]:
        """Each span's own time on the path (milliseconds), over all its segments."""
        found: dict[str, float] = defaultdict(float)
        for segment in self.segments:
            found[segment.span_id] += segment.duration_ms
        return dict(found)

    def as_dict(self) -> dict[str, Any]:
        return {
            "root_span_id": self.root_span_id,
            "total_ms": self.total_ns / 1e6,
            "span_ids": self.span_ids,
            "segments": [s.as_dict(self.total_ns) for s in self.segments],
        }


def _root(spans: Sequence[TraceSpan]) -> TraceSpan:
    """The span whose parent is not in the trace that lasts longest (the earliest first)."""
    ids = {s.span_id for s in spans}
    roots = [s for s in spans if not s.parent_span_id or s.parent_span_id not in ids] or list(spans)
    return max(roots, key=lambda s: (s.end_ns - s.start_ns, -s.start_ns))


def critical_path(spans: Sequence[TraceSpan], root_span_id: str | None = None) -> CriticalPath:
    """The critical path of the trace under `root_span_id` (default: its longest root)."""
    if not spans:
        return CriticalPath(None, 0, 0, ())
    by_id: dict[str, TraceSpan] = {}
    for span in spans:
        by_id.setdefault(span.span_id, span)  # a repeated id: the first one only
    root = by_id.get(root_span_id or "") or _root(spans)
    children: dict[str, list[TraceSpan]] = defaultdict(list)
    for span in by_id.values():
        # One trace: a span of another (a linked session trace) is never a child here.
        if span.trace_id != root.trace_id:
            continue
        if span.parent_span_id and span.parent_span_id != span.span_id:
            children[span.parent_span_id].append(span)
    backwards: list[Segment] = []  # built from the end back
    visited: set[str] = set()

    def own(span: TraceSpan, start: int, end: int) -> None:
        if end > start:
            backwards.append(Segment(span.span_id, span.service, span.name, start, end))

    def walk(span: TraceSpan, lo: int, hi: int, depth: int) -> None:
        """`span`'s share of [lo, hi]: its children's critical paths and its own gaps."""
        visited.add(span.span_id)
        kids = [] if depth >= MAX_DEPTH else children.get(span.span_id, [])
        cursor = hi
        while cursor > lo:
            # Children with time in [lo, cursor): the one that ends last (clipped to the
            # cursor) owns the time back to its start; ties: the one that really ends last.
            running = [
                c
                for c in kids
                if c.span_id not in visited and max(c.start_ns, lo) < min(c.end_ns, cursor)
            ]
            if not running:
                break
            child = max(running, key=lambda c: (min(c.end_ns, cursor), c.end_ns, c.start_ns))
            child_end = min(child.end_ns, cursor)
            child_start = max(child.start_ns, lo)
            own(span, child_end, cursor)
            walk(child, child_start, child_end, depth + 1)
            cursor = child_start
        own(span, lo, cursor)

    walk(root, root.start_ns, root.end_ns, 0)
    return CriticalPath(root.span_id, root.start_ns, root.end_ns, tuple(reversed(backwards)))


def render_path(path: CriticalPath) -> str:
    """The path as lines: each segment's time, its share of the total, service and span."""
    if not path.segments:
        return "critical path: (no spans)"
    total = max(path.total_ns, 1)
    width = max(len(s.service) for s in path.segments)
    lines = [f"critical path ({path.total_ns / 1e6:.1f} ms, {len(path.segments)} segments):"]
    for segment in path.segments:
        offset = (segment.start_ns - path.start_ns) / 1e6
        share = (segment.end_ns - segment.start_ns) / total * 100
        lines.append(
            f"  {segment.duration_ms:8.1f} ms  {share:5.1f}%  (+{offset:.1f} ms)  "
            f"{segment.service:<{width}}  {segment.name}"
        )
    return "\n".join(lines)
