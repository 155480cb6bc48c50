"""The audit's verdicts as Prometheus gauges (GET /metrics on the flow view).

Span metrics say how long each hop took; only the chain analysis can say whether a message's
chain is whole. Each scrape reads the audit of a recent window: messages that ended at least
`SETTLE_S` ago (a chain waiting for the last batch of spans is not broken), counted by
chain verdict and outcome, and broken chains by each layer they lack. The result is kept for
`CACHE_S`, so several scrapers cost one audit, and each settled message's verdict is the
flow view's shared one (`VerdictCache`): a scrape analyses only the messages new since.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass

from omni_trace.flowview.data import SETTLE_S, Auditor
from omni_trace.traces.audit import AuditQuery
from omni_trace.traces.chain import LAYERS, MISSING, ChainReport

WINDOW_S = 900.0
CACHE_S = 10.0
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
CHAINS = ("whole", "not_traced", "broken", "client_only")


@dataclass(frozen=True)
class AuditCounts:
    messages: Counter[tuple[str, str]]  # (chain, outcome) -> messages
    missing: Counter[str]  # layer -> broken chains without it
    not_traced: Counter[str]  # layer -> messages whose first hop says it was not traced
    seconds: float  # how long the audit took
    limited: bool  # the window held more messages than one audit reads

    def exposition(self) -> str:
        window = f"{WINDOW_S:.0f}"
        lines = [
            "# HELP omni_trace_audit_messages Messages of the audit window by chain verdict "
            "(whole; not_traced: whole from the first traced layer, e.g. a client that sent no "
            "trace context; broken; client_only: only the client's word) and outcome (settled "
            "messages only).",
            "# TYPE omni_trace_audit_messages gauge",
        ]
        for chain in CHAINS:
            for outcome in ("ok", "refused", "error"):
                count = self.messages[(chain, outcome)]
                lines.append(
                    f'omni_trace_audit_messages{{chain="{chain}",outcome="{outcome}",'
                    f'window_s="{window}"}} {count}'
                )
        lines += [
            "# HELP omni_trace_audit_missing_layer Broken chains of the audit window that "
            "lack this layer.",
            "# TYPE omni_trace_audit_missing_layer gauge",
        ]
        for layer in LAYERS:
            lines.append(
                f'omni_trace_audit_missing_layer{{layer="{layer}",window_s="{window}"}} '
                f"{self.missing[layer]}"
            )
        lines += [
            "# HELP omni_trace_audit_not_traced_layer Messages of the audit window whose first "
            "traced layer recorded that this layer was not traced (not a break).",
            "# TYPE omni_trace_audit_not_traced_layer gauge",
        ]
        for layer in LAYERS:
            lines.append(
                f'omni_trace_audit_not_traced_layer{{layer="{layer}",window_s="{window}"}} '
                f"{self.not_traced[layer]}"
            )
        lines += [
            "# HELP omni_trace_audit_seconds How long the last audit of the window took.",
            "# TYPE omni_trace_audit_seconds gauge",
            f"omni_trace_audit_seconds {self.seconds:.3f}",
            "# HELP omni_trace_audit_limited 1 when the window held more messages than one "
            "audit reads (the counts are of the newest).",
            "# TYPE omni_trace_audit_limited gauge",
            f"omni_trace_audit_limited {int(self.limited)}",
        ]
        return "\n".join(lines) + "\n"


class AuditMetrics:
    def __init__(self, auditor: Auditor) -> None:
        self._auditor = auditor
        self._lock = threading.Lock()
        self._cached: tuple[float, AuditCounts] | None = None

    def counts(self) -> AuditCounts:
        with self._lock:
            now = time.monotonic()
            if self._cached is None or now - self._cached[0] > CACHE_S:
                self._cached = (now, self._audit())
            return self._cached[1]

    def _audit(self) -> AuditCounts:
        started = time.perf_counter()
        query = AuditQuery(since_s=WINDOW_S + SETTLE_S)
        settled_before_ns = int((time.time() - SETTLE_S) * 1e9)
        messages: Counter[tuple[str, str]] = Counter()
        missing: Counter[str] = Counter()
        not_traced: Counter[str] = Counter()
        verdicts = self._auditor.audit(query)
        for report, turn in ((v.report, v.turn) for v in verdicts):
            if report.end_ns > settled_before_ns:
                continue
            messages[(chain_verdict(report), turn["outcome"])] += 1
            if report.broken:
                missing.update(
                    layer for layer, state in report.layer_states.items() if state == MISSING
                )
            not_traced.update(report.not_traced)
        return AuditCounts(
            messages,
            missing,
            not_traced,
            time.perf_counter() - started,
            len(verdicts) >= query.limit,
        )


def chain_verdict(report: ChainReport) -> str:
    """The `chain` label of a message: each counted once, untraced layers apart."""
    if report.broken:
        return "broken"
    if report.client_only:
        return "client_only"
    return "not_traced" if report.not_traced else "whole"
