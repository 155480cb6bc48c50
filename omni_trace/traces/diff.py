"""Two message traces side by side (`omni-trace trace diff A B`): what one has that the other
has not, and where the time went differently.

Spans are matched by where they sit under the message: the path of (service, span name,
position among its same-named siblings, by start) from the trace's root, so the second
`chat <model>` call under `chat.turn` matches the other trace's second one. Layers are the
services present. Time differences: per hop (the chain reports' `hops`) and per service and
span name (all spans of that name together), largest first. Pure functions over spans and
chain reports; nothing is read from Jaeger here.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from omni_trace.traces.chain import ChainReport
from omni_trace.traces.jaeger import TraceSpan

Key = tuple[tuple[str, str, int], ...]


def span_keys(spans: Sequence[TraceSpan]) -> dict[Key, TraceSpan]:
    """Each span by its place under the trace's roots (spans whose parent is not here)."""
    ids = {s.span_id for s in spans}
    children: dict[str | None, list[TraceSpan]] = defaultdict(list)
    for span in sorted(spans, key=lambda s: (s.start_ns, s.span_id)):
        parent = span.parent_span_id if span.parent_span_id in ids else None
        if parent == span.span_id:
            parent = None
        children[parent].append(span)
    seen: set[str] = set()

    def placed(parent: str | None, key: Key) -> list[tuple[TraceSpan, Key]]:
        counts: dict[tuple[str, str], int] = defaultdict(int)
        out = []
        for span in children.get(parent, []):
            if span.span_id in seen:
                continue
            seen.add(span.span_id)
            out.append((span, (*key, (span.service, span.name, counts[span.service, span.name]))))
            counts[span.service, span.name] += 1
        return out

    found: dict[Key, TraceSpan] = {}
    todo = placed(None, ())[::-1]
    while todo:  # depth first, in start order; no recursion: a hostile trace may be deep
        span, key = todo.pop()
        found[key] = span
        todo.extend(placed(span.span_id, key)[::-1])
    return found


def describe(key: Key) -> str:
    """`omni2 chat.turn > omni2 chat offline-1 #2` for a span's place."""
    return " > ".join(f"{service} {name}" + (f" #{n + 1}" if n else "") for service, name, n in key)


@dataclass(frozen=True)
class TimeDelta:
    what: str
    a_ms: float | None
    b_ms: float | None
    a_count: int = 1
    b_count: int = 1

    @property
    def delta_ms(self) -> float | None:
        return None if self.a_ms is None or self.b_ms is None else self.b_ms - self.a_ms

    def as_dict(self) -> dict[str, Any]:
        return {
            "what": self.what,
            "a_ms": self.a_ms,
            "b_ms": self.b_ms,
            "delta_ms": self.delta_ms,
            "a_count": self.a_count,
            "b_count": self.b_count,
        }


def _largest_first(deltas: list[TimeDelta]) -> list[TimeDelta]:
    """By the size of the difference; those only one side has (no difference) last."""
    return sorted(deltas, key=lambda d: (d.delta_ms is None, -abs(d.delta_ms or 0.0), d.what))


@dataclass(frozen=True)
class TraceDiff:
    a_trace_id: str
    b_trace_id: str
    only_in_a: list[tuple[Key, TraceSpan]]
    only_in_b: list[tuple[Key, TraceSpan]]
    layers_only_in_a: list[str]
    layers_only_in_b: list[str]
    hops: list[TimeDelta]
    spans: list[TimeDelta]

    @property
    def same_structure(self) -> bool:
        return not (self.only_in_a or self.only_in_b)

    def as_dict(self) -> dict[str, Any]:
        def placed(items: list[tuple[Key, TraceSpan]]) -> list[dict[str, Any]]:
            return [
                {
                    "path": describe(key),
                    "service": span.service,
                    "name": span.name,
                    "span_id": span.span_id,
                    "duration_ms": span.duration_ms,
                }
                for key, span in items
            ]

        return {
            "a": self.a_trace_id,
            "b": self.b_trace_id,
            "same_structure": self.same_structure,
            "only_in_a": placed(self.only_in_a),
            "only_in_b": placed(self.only_in_b),
            "layers_only_in_a": self.layers_only_in_a,
            "layers_only_in_b": self.layers_only_in_b,
            "hops": [d.as_dict() for d in self.hops],
            "spans": [d.as_dict() for d in self.spans],
        }


def _by_name(spans: Sequence[TraceSpan]) -> dict[str, tuple[float, int]]:
    found: dict[str, tuple[float, int]] = {}
    for span in spans:
        total, count = found.get(f"{span.service} {span.name}", (0.0, 0))
        found[f"{span.service} {span.name}"] = (total + span.duration_ms, count + 1)
    return found


def diff_traces(
    a: Sequence[TraceSpan],
    b: Sequence[TraceSpan],
    a_report: ChainReport | None = None,
    b_report: ChainReport | None = None,
) -> TraceDiff:
    """What differs between message traces `a` and `b` (with their chain reports, for hops)."""
    a_keys, b_keys = span_keys(a), span_keys(b)
    a_services = {s.service for s in a}
    b_services = {s.service for s in b}
    hops: list[TimeDelta] = []
    if a_report is not None and b_report is not None:
        for hop in dict.fromkeys([*a_report.hops, *b_report.hops]):
            a_ms, b_ms = a_report.hops.get(hop), b_report.hops.get(hop)
            if a_ms is not None or b_ms is not None:
                hops.append(
                    TimeDelta(hop, a_ms, b_ms, int(a_ms is not None), int(b_ms is not None))
                )
    a_names, b_names = _by_name(a), _by_name(b)
    spans = [
        TimeDelta(
            name,
            a_names[name][0] if name in a_names else None,
            b_names[name][0] if name in b_names else None,
            a_names.get(name, (0.0, 0))[1],
            b_names.get(name, (0.0, 0))[1],
        )
        for name in dict.fromkeys([*a_names, *b_names])
    ]
    return TraceDiff(
        a_trace_id=a[0].trace_id if a else "",
        b_trace_id=b[0].trace_id if b else "",
        only_in_a=[(k, s) for k, s in a_keys.items() if k not in b_keys],
        only_in_b=[(k, s) for k, s in b_keys.items() if k not in a_keys],
        layers_only_in_a=sorted(a_services - b_services),
        layers_only_in_b=sorted(b_services - a_services),
        hops=_largest_first(hops),
        spans=_largest_first(spans),
    )


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def render_diff(diff: TraceDiff) -> str:
    lines = [f"A {diff.a_trace_id}", f"B {diff.b_trace_id}", ""]
    if diff.same_structure:
        lines.append("structure: the same spans in the same places")
    for label, items in (("only in A", diff.only_in_a), ("only in B", diff.only_in_b)):
        if items:
            lines.append(f"{label}:")
            lines += [f"  {describe(key)}  {span.duration_ms:.1f} ms" for key, span in items]
    for label, layers in (
        ("layers only in A", diff.layers_only_in_a),
        ("layers only in B", diff.layers_only_in_b),
    ):
        if layers:
            lines.append(f"{label}: {', '.join(layers)}")

    def table(title: str, deltas: list[TimeDelta]) -> None:
        if not deltas:
            return
        width = max(len(d.what) for d in deltas)
        lines.extend(["", f"{title} (ms, largest difference first):"])
        lines.append(f"  {'':<{width}}  {'A':>9}  {'B':>9}  {'B - A':>9}")
        for d in deltas:
            counts = f"  (x{d.a_count} / x{d.b_count})" if d.a_count > 1 or d.b_count > 1 else ""
            delta = "-" if d.delta_ms is None else f"{d.delta_ms:+.1f}"
            lines.append(
                f"  {d.what:<{width}}  {_ms(d.a_ms):>9}  {_ms(d.b_ms):>9}  {delta:>9}{counts}"
            )

    table("hops", diff.hops)
    table("spans by service and name", diff.spans)
    return "\n".join(lines)
