"""Render a trace as an indented tree: service, span, duration, status and links."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from omni_trace.traces.jaeger import TraceSpan


def render_tree(spans: Sequence[TraceSpan], *, show_links: bool = True) -> str:
    if not spans:
        return "(no spans)"
    ids = {s.span_id for s in spans}
    children: dict[str | None, list[TraceSpan]] = defaultdict(list)
    roots: list[TraceSpan] = []
    for span in spans:
        if span.parent_span_id and span.parent_span_id in ids:
            children[span.parent_span_id].append(span)
        else:
            roots.append(span)
    origin = min(s.start_ns for s in spans)
    width = max(len(s.service) for s in spans)
    lines = [f"trace {spans[0].trace_id}"]

    def walk(span: TraceSpan, depth: int) -> None:
        offset = (span.start_ns - origin) / 1e6
        note = ""
        if span.parent_span_id and span.parent_span_id not in ids:
            note += f"  (parent {span.parent_span_id} not in trace)"
        if span.status == "ERROR":
            note += f"  ERROR: {span.status_message or span.attributes.get('error.type', '')}"
        lines.append(
            f"  {'  ' * depth}{span.service:<{width}}  {span.name}  "
            f"{span.duration_ms:.1f} ms  (+{offset:.1f} ms){note}"
        )
        if show_links:
            for link in span.links:
                role = link.attributes.get("chat.link.role", "link")
                lines.append(
                    f"  {'  ' * depth}{'':<{width}}    ~> {role}: trace {link.trace_id} "
                    f"span {link.span_id}"
                )
        for child in sorted(children[span.span_id], key=lambda s: s.start_ns):
            walk(child, depth + 1)

    for root in roots:
        walk(root, 0)
    return "\n".join(lines)
