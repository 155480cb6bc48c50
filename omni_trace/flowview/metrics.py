"""The audit's verdicts for Prometheus (GET /metrics on the flow view).

Span metrics say how long each hop took; only the chain analysis can say whether a message's
chain is whole. The counts come from the audit ledger (`ledger.AuditLedger`): each message is
judged once, when it has settled (a chain waiting for the last batch of spans is not broken),
so a scrape costs the messages that settled since the last one, however many the window
holds. Counters (`*_total`) count every message judged since the flow view started; the
window gauges count those that ended in the last `WINDOW_S`. An update serves scrapes for
`CACHE_S`, so several scrapers cost one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from omni_trace.flowview.data import Auditor
from omni_trace.flowview.ledger import (
    CHAINS,
    OUTCOMES,
    WINDOW_S,
    AuditLedger,
    LedgerJaeger,
    LedgerState,
    Tally,
)
from omni_trace.traces.chain import LAYERS

CACHE_S = 10.0
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _family(name: str, kind: str, help_text: str) -> list[str]:
    return [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]


def _tally_lines(
    tally: Tally, prefix: str, suffix: str, kind: str, what: str, extra: str = ""
) -> Iterator[str]:
    """A tally's families: by chain and outcome, by missing layer, by layer not traced, and
    stalled streams by hop.
    `extra`: more labels, e.g. the window's."""
    name = f"{prefix}_messages{suffix}"
    yield from _family(
        name,
        kind,
        f"Messages {what} by chain verdict (whole; not_traced: whole from the first traced "
        "layer, e.g. a client that sent no trace context; broken; client_only: only the "
        "client's word) and outcome (settled messages only).",
    )
    for chain in CHAINS:
        for outcome in OUTCOMES:
            count = tally.messages[(chain, outcome)]
            yield f'{name}{{chain="{chain}",outcome="{outcome}"{extra}}} {count}'
    name = f"{prefix}_missing_layer{suffix}"
    yield from _family(name, kind, f"Broken chains {what} that lack this layer.")
    for layer in LAYERS:
        yield f'{name}{{layer="{layer}"{extra}}} {tally.missing[layer]}'
    name = f"{prefix}_not_traced_layer{suffix}"
    yield from _family(
        name,
        kind,
        f"Messages {what} whose first traced layer recorded that this layer was not traced "
        "(not a break).",
    )
    for layer in LAYERS:
        yield f'{name}{{layer="{layer}"{extra}}} {tally.not_traced[layer]}'
    name = f"{prefix}_stalls{suffix}"
    yield from _family(
        name,
        kind,
        f"Messages {what} whose stream this hop held: its longest gap between token frames "
        "exceeded the layer below's by the stall threshold (omni_trace.traces.streams).",
    )
    for layer in LAYERS:
        yield f'{name}{{hop="{layer}"{extra}}} {tally.stalls[layer]}'


@dataclass(frozen=True)
class AuditCounts:
    state: LedgerState

    def exposition(self) -> str:
        state = self.state
        prefix = "omni_trace_audit"
        lines = [
            *_tally_lines(state.totals, prefix, "_total", "counter", "judged since start-up"),
            *_tally_lines(
                state.window,
                prefix,
                "",
                "gauge",
                "that ended in the audit window",
                f',window_s="{WINDOW_S:.0f}"',
            ),
            *_family(
                f"{prefix}_judged_total",
                "counter",
                "Messages the audit has judged (counted, or left out: a client's trace that a "
                "message trace links to, a message from before the flow view started).",
            ),
            f"{prefix}_judged_total {state.judged}",
            *_family(
                f"{prefix}_cpu_seconds_total",
                "counter",
                "Process CPU time spent in the audit's updates (searches, trace reads, analysis).",
            ),
            f"{prefix}_cpu_seconds_total {state.cpu_seconds:.6f}",
            *_family(f"{prefix}_seconds", "gauge", "How long the last update of the audit took."),
            f"{prefix}_seconds {state.seconds:.3f}",
            *_family(
                f"{prefix}_update_failed",
                "gauge",
                "1 when the last update could not read Jaeger (the counts are those before it).",
            ),
            f"{prefix}_update_failed {int(state.failed)}",
            *_family(
                f"{prefix}_watermark_timestamp_seconds",
                "gauge",
                "Every message that ended before this time (Unix seconds) has been judged.",
            ),
            f"{prefix}_watermark_timestamp_seconds {state.watermark_s:.3f}",
        ]
        return "\n".join(lines) + "\n"


class AuditMetrics:
    def __init__(
        self,
        auditor: Auditor,
        jaeger: LedgerJaeger | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        # The auditor's own Jaeger by default: its connections.
        jaeger = jaeger or auditor.jaeger
        # Judged by the auditor's spec: the one the view serves.
        self._ledger = AuditLedger(auditor, jaeger, spec=auditor.spec, clock=clock)
        self._lock = threading.Lock()
        self._cached: tuple[float, AuditCounts] | None = None

    def counts(self) -> AuditCounts:
        with self._lock:
            now = time.monotonic()
            if self._cached is None or now - self._cached[0] > CACHE_S:
                self._cached = (now, AuditCounts(self._ledger.update()))
            return self._cached[1]
