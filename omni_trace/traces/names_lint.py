"""`omni-trace names --lint`: GenAI and MCP attribute keys in any stack's spans that the
conventions deprecated, or that they do not know (a misspelling, or a name from an older
draft), with the name to use instead.

The tables are otel/semconv.py's, kept from the conventions (semconv v1.41.0). The spans are
read from a Jaeger query API, bounded by a time window and a number of spans, each trace once.
"""

from __future__ import annotations

import difflib
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from omni_trace.traces.jaeger import JaegerClient, TraceSpan
from otel.semconv import CONVENTION_VERSION, DEPRECATED_ATTRIBUTES, GEN_AI_MCP_ATTRIBUTES

LINTED_PREFIXES = ("gen_ai.", "mcp.")
DEPRECATED = "deprecated"
UNKNOWN = "unknown"
# Suggestions come from the known names and the deprecated ones' replacements.
_CANDIDATES = sorted(GEN_AI_MCP_ATTRIBUTES)


@dataclass(frozen=True)
class Finding:
    service: str
    span: str
    key: str
    problem: str  # DEPRECATED or UNKNOWN
    suggestion: str | None  # the name to use; None when the conventions removed it outright
    count: int  # spans (and span events) of this service and name carrying the key


def judge(key: str) -> tuple[str, str | None] | None:
    """(problem, suggestion) for a key the conventions deprecate or do not know; None when it
    is fine or not a GenAI/MCP key."""
    if key in DEPRECATED_ATTRIBUTES:
        return DEPRECATED, DEPRECATED_ATTRIBUTES[key]
    if not key.startswith(LINTED_PREFIXES) or key in GEN_AI_MCP_ATTRIBUTES:
        return None
    nearest = difflib.get_close_matches(key, _CANDIDATES, n=1, cutoff=0.6)
    return UNKNOWN, (nearest[0] if nearest else None)


def lint_spans(spans: Iterable[TraceSpan]) -> list[Finding]:
    """Every deprecated or unknown key, per service, span name and key, most frequent first.
    Span event attributes count too (GenAI events carry gen_ai.* keys)."""
    counts: Counter[tuple[str, str, str]] = Counter()
    verdicts: dict[str, tuple[str, str | None] | None] = {}
    for span in spans:
        keys = set(span.attributes)
        for event in span.events:
            keys.update(event.attributes)
        for key in keys:
            if key not in verdicts:
                verdicts[key] = judge(key)
            if verdicts[key] is not None:
                counts[(span.service, span.name, key)] += 1
    findings = []
    for (service, name, key), count in counts.items():
        verdict = verdicts[key]
        assert verdict is not None
        findings.append(Finding(service, name, key, verdict[0], verdict[1], count))
    return sorted(findings, key=lambda f: (-f.count, f.service, f.span, f.key))


@dataclass(frozen=True)
class LintResult:
    findings: list[Finding]
    services: list[str]
    traces: int
    spans: int
    truncated: bool  # the span limit stopped the reading

    def render(self) -> str:
        lines = [
            f"read {self.spans} spans of {self.traces} traces from {len(self.services)} "
            f"services{' (span limit reached)' if self.truncated else ''}; GenAI/MCP names "
            f"checked against semantic conventions {CONVENTION_VERSION}"
        ]
        if not self.findings:
            lines.append("no deprecated or unknown GenAI/MCP attribute names")
            return "\n".join(lines) + "\n"
        rows = [("service", "span", "key", "count", "problem")]
        for f in self.findings:
            if f.problem == DEPRECATED:
                what = f"deprecated: use {f.suggestion}" if f.suggestion else "deprecated: removed"
            else:
                what = f"unknown: did you mean {f.suggestion}?" if f.suggestion else "unknown"
            rows.append((f.service, f.span, f.key, str(f.count), what))
        widths = [max(len(row[i]) for row in rows) for i in range(4)]
        for row in rows:
            cells = [cell.ljust(widths[i]) for i, cell in enumerate(row[:4])]
            lines.append("  ".join([*cells, row[4]]).rstrip())
        return "\n".join(lines) + "\n"


def lint_jaeger(
    client: JaegerClient,
    *,
    minutes: float = 60.0,
    span_limit: int = 20_000,
    traces_per_service: int = 200,
    services: Sequence[str] = (),
    now_s: float | None = None,
) -> LintResult:
    """Read the newest traces of every service in the window (or of `services` only; each
    trace once) until `span_limit` spans, and lint their spans (of those services only).
    Raises JaegerError when Jaeger cannot be asked."""
    end_us = int((time.time() if now_s is None else now_s) * 1_000_000)
    start_us = end_us - int(minutes * 60 * 1_000_000)
    known = client.services()
    services = [s for s in known if s in services] if services else known
    seen: set[str] = set()
    spans: list[TraceSpan] = []
    truncated = False
    for service in services:
        if len(spans) >= span_limit:
            truncated = True
            break
        found = client.find_traces(
            service,
            start_us=start_us,
            end_us=end_us,
            limit=traces_per_service,
            wanted=lambda trace_id: trace_id not in seen,
        )
        for trace_id, trace_spans in found.traces.items():
            if trace_id in seen:
                continue
            seen.add(trace_id)
            if len(services) != len(known):  # other services' spans are not asked about
                trace_spans = [s for s in trace_spans if s.service in services]
            room = span_limit - len(spans)
            if len(trace_spans) > room:
                spans.extend(trace_spans[:room])
                truncated = True
                break
            spans.extend(trace_spans)
    return LintResult(lint_spans(spans), services, len(seen), len(spans), truncated)
