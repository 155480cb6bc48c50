"""Diagnosing traces: for any stack's Jaeger and its chain spec, where do the chains of recent
messages (or of one message) break or fail, and why (`omni-trace doctor --jaeger`).

Reads only what a stack already sent to Jaeger, judged by `omni_trace.traces`: it imports
nothing of the stack, so the toolkit's install alone runs it (tests/omni_trace/test_packaging.py).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from omni_trace.traces.chain import ChainReport
from omni_trace.traces.spec import ChainSpec

SHOWN_PER_FINDING = 5  # trace ids listed under a finding shared by many messages


@dataclass
class Finding:
    """Messages that broke (or failed) the same way: at `hop`, because of `cause`."""

    broken: bool
    hop: str
    cause: str
    reports: list[ChainReport] = field(default_factory=list)

    def headline(self) -> str:
        what = "chain breaks at" if self.broken else "message failed at"
        count = f"{len(self.reports)} x " if len(self.reports) > 1 else ""
        return f"{count}{what} {self.hop}: {self.cause}"


def findings(reports: list[ChainReport]) -> list[Finding]:
    """Broken chains first, then failed messages, each group the most frequent first."""
    groups: dict[tuple[bool, str, str], Finding] = {}
    for report in reports:
        if not report.broken and not report.errors:
            continue
        hop = report.hop or "chain"
        cause = report.cause or "; ".join(report.problems or report.errors)
        key = (report.broken, hop, cause)
        groups.setdefault(key, Finding(report.broken, hop, cause)).reports.append(report)
    return sorted(groups.values(), key=lambda f: (not f.broken, -len(f.reports), f.hop))


def render(reports: list[ChainReport], spec: ChainSpec, scope: str) -> str:
    found = findings(reports)
    broken = sum(f.broken * len(f.reports) for f in found)
    failed = sum((not f.broken) * len(f.reports) for f in found)
    whole = len(reports) - broken - failed
    lines = [
        f"{len(reports)} message(s) of {scope}, read by the {spec.name} spec: {whole} whole "
        f"and answered, {broken} broken chain(s), {failed} failed"
    ]
    untraced: dict[str, int] = defaultdict(int)
    for report in reports:
        for name in report.not_traced:
            untraced[name] += 1
    if untraced:
        said = ", ".join(f"{name} in {n}" for name, n in sorted(untraced.items()))
        lines.append(
            f"not traced (by the first traced layer's own record, not a break): {said} "
            "message(s); their chains are judged from the first layer traced"
        )
    hop_counts: dict[str, int] = defaultdict(int)
    for finding in found:
        hop_counts[finding.hop] += len(finding.reports)
        lines += ["", finding.headline()]
        for report in finding.reports[:SHOWN_PER_FINDING]:
            reached = ", ".join(name for name, ok in report.layers.items() if ok) or "none"
            untraced_here = (
                f" ({', '.join(report.not_traced)} not traced)" if report.not_traced else ""
            )
            who = f"  conversation {report.conversation_id}" if report.conversation_id else ""
            lines.append(
                f"  trace {report.trace_id}{who}  layers reached: {reached}{untraced_here}"
            )
        if len(finding.reports) > SHOWN_PER_FINDING:
            lines.append(f"  ... and {len(finding.reports) - SHOWN_PER_FINDING} more")
    if not found and reports:
        lines += ["", "every chain is whole and every message was answered"]
    if len(hop_counts) > 1:
        worst = max(hop_counts, key=lambda hop: hop_counts[hop])
        lines += ["", f"most problems at: {worst} ({hop_counts[worst]} message(s))"]
    return "\n".join(lines)
