"""A terminal waterfall: one row per span, a bar placed on the trace's time line."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Sequence

from omni_trace.traces.jaeger import TraceSpan


def _ordered(spans: Sequence[TraceSpan]) -> list[tuple[int, TraceSpan]]:
    """Depth-first order with depths; spans whose parent is missing become roots."""
    ids = {s.span_id for s in spans}
    children: dict[str | None, list[TraceSpan]] = defaultdict(list)
    for span in sorted(spans, key=lambda s: s.start_ns):
        parent = span.parent_span_id if span.parent_span_id in ids else None
        children[parent].append(span)
    out: list[tuple[int, TraceSpan]] = []

    def walk(parent: str | None, depth: int) -> None:
        for span in children[parent]:
            out.append((depth, span))
            walk(span.span_id, depth + 1)

    walk(None, 0)
    return out


def render_waterfall(
    spans: Sequence[TraceSpan],
    width: int = 100,
    title: str = "",
    critical: Collection[str] = (),
) -> str:
    """`critical`: span ids on the critical path, marked `*` before their label."""
    if not spans:
        return "(no spans)"
    rows = _ordered(spans)
    start = min(s.start_ns for s in spans)
    end = max(s.end_ns for s in spans)
    total = max(end - start, 1)
    labels = [f"{'  ' * depth}{span.service} {span.name}" for depth, span in rows]
    if critical:
        labels = [
            f"{'*' if span.span_id in critical else ' '} {label}"
            for label, (_, span) in zip(labels, rows, strict=True)
        ]
    label_width = min(max(len(label) for label in labels), 48)
    bar_width = max(width - label_width - 15, 20)  # " |", "| ", "%8.1f", " ms"
    lines = [title or f"trace {spans[0].trace_id}  ({total / 1e6:.1f} ms)"]
    for label, (_, span) in zip(labels, rows, strict=True):
        left = int((span.start_ns - start) / total * bar_width)
        length = max(1, round((span.end_ns - span.start_ns) / total * bar_width))
        length = min(length, bar_width - left)
        bar = " " * left + ("!" if span.status == "ERROR" else "█") * length
        lines.append(
            f"{label[:label_width]:<{label_width}} |{bar:<{bar_width}}| {span.duration_ms:8.1f} ms"
        )
    return "\n".join(lines)
