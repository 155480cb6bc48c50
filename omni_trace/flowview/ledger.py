"""The audit as a ledger: each message judged once, when it has settled, and counted.

The flow view's `/metrics` used to audit every message of the last 15 minutes on each
scrape. The ledger instead keeps a watermark, a time before which every message has been
judged: each update (a scrape's, never a timer's) asks Jaeger only for the messages that
ended since, judges those that have settled (last span `SETTLE_S` ago) through the flow
view's `Auditor` (so the verdict lands in the `VerdictCache` that pages read), adds them to
counters and moves the watermark up to "now - SETTLE_S". A message still growing waits in
`_pending` and is read again only once its last known span is `SETTLE_S` old.

Jaeger's v3 search answers with the whole traces it found, so a new message is judged from
what its search returned and never read again by id (only session traces, for the links, and
pending messages are). Each layer's search returns every message recorded at that layer, so a
whole message comes back once per layer (and a short one again in the next update's look
back): Jaeger's search has nothing to leave known traces out (its parameters are a service,
a span name, a start time range, durations and a count). So the searches claim each trace id
(`_Claims`): the first answer to hold a new message has its elements decoded and its spans
built, every other answer skips them undecoded (`jaeger.parse_otlp_answer`), and so does any
answer holding a message already judged, pending or with its verdict cached. A message
recorded at one layer only is still found: each layer is searched.

The searches run one after another, never side by side: the layers' searches return the same
traces, and the memory store of the Jaeger built here (v1.76.0) hands each query the stored
trace itself, which the query service's adjusters then change in place (sorting, removing
duplicate spans; see jaegertracing/jaeger#7958): two queries at once may change one trace
together.

Jaeger's search selects by a span's start time, and a span reaches Jaeger when it ends: a
message that started before the watermark can end after it. So each update also looks back
before the watermark in steps (`STEPS_S`), each asking only for spans at least as long as
the step's distance from the watermark, so that Jaeger returns the few long messages and
not every message of the last minutes again. Anything returned twice is recognised by the
trace ids the ledger keeps for exactly as long as a later search could return them
(`_keep_until`). A message longer than `MAX_MESSAGE_S` is not found.

Memory is bounded by the messages of that stretch plus the unsettled ones, and the window
gauges by `WINDOW_S / BUCKET_S` buckets of counters, however many messages there are.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Container, Iterable
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Protocol

import httpx

from omni_trace.flowview.data import SETTLE_S, Auditor, TraceCache, Verdict
from omni_trace.traces.chain import MISSING, ChainReport
from omni_trace.traces.jaeger import FoundTraces, JaegerError, TraceSpan
from omni_trace.traces.spec import ChainSpec, default_spec

WINDOW_S = 900.0
BUCKET_S = 10.0
# One search's limit: past it the range is cut until each part answers with fewer
# (`_cuts`).
SEARCH_LIMIT = 500
# The look back before the watermark: step i holds spans that started between STEPS_S[i+1]
# and STEPS_S[i] seconds before it and lasted at least STEPS_S[i] (only those can have ended
# after it). Growing by four: a few searches per layer, and a message is returned again by
# later updates for about three times its length at most.
STEPS_S = (0.0, 15.0, 60.0, 240.0, 960.0, 3600.0)
MAX_MESSAGE_S = STEPS_S[-1]
# Link mode: a client's own trace is a part of the message trace that links to it. The
# linking trace ends first (the client waits for its answer), so a trace only the client
# recorded is counted this much after it settled, when its linking trace has been judged.
LINK_GRACE_S = SETTLE_S
LINK_KEEP_S = 600.0
# At most this many messages judged per update (a scrape has 10 s): the rest next time.
BATCH = 2000
CHAINS = ("whole", "not_traced", "broken", "client_only")
OUTCOMES = ("ok", "refused", "error")
NS = 1_000_000_000


class LedgerJaeger(Protocol):
    """What the ledger reads of Jaeger."""

    def services(self) -> list[str]: ...

    def get_trace(self, trace_id: str) -> list[TraceSpan]: ...

    def find_traces(
        self,
        service: str,
        operation: str | None = None,
        *,
        start_us: int,
        end_us: int,
        min_duration_us: int = 0,
        limit: int = 100,
        wanted: Callable[[str], bool] | None = None,
    ) -> FoundTraces:
        """As `JaegerClient.find_traces`: traces with a span of `service` named `operation`
        that started within [start_us, end_us] (Unix us) and lasted at least
        `min_duration_us`, the newest `limit`: every id, and the spans of those `wanted`
        (asked once per id) says yes to."""
        ...


def chain_verdict(report: ChainReport) -> str:
    """The `chain` label of a message: each counted once, untraced layers apart."""
    if report.broken:
        return "broken"
    if report.client_only:
        return "client_only"
    return "not_traced" if report.not_traced else "whole"


@dataclass
class Tally:
    """Verdicts counted: by (chain, outcome), broken chains by each layer they lack, and
    messages by each layer their first traced hop says was not traced."""

    messages: Counter[tuple[str, str]] = field(default_factory=Counter)
    missing: Counter[str] = field(default_factory=Counter)
    not_traced: Counter[str] = field(default_factory=Counter)
    # Messages whose stream a hop held, by that hop (the layer the stall verdict names).
    stalls: Counter[str] = field(default_factory=Counter)

    def add(self, verdict: Verdict) -> None:
        report = verdict.report
        self.messages[(chain_verdict(report), verdict.turn["outcome"])] += 1
        if report.broken:
            self.missing.update(
                layer for layer, state in report.layer_states.items() if state == MISSING
            )
        self.not_traced.update(report.not_traced)
        if report.stall is not None:
            self.stalls[report.stall.layer] += 1

    def merge(self, other: Tally) -> None:
        self.messages.update(other.messages)
        self.missing.update(other.missing)
        self.not_traced.update(other.not_traced)
        self.stalls.update(other.stalls)

    def copy(self) -> Tally:
        found = Tally()
        found.merge(self)
        return found


@dataclass(frozen=True)
class LedgerState:
    """What an update left, for the exposition (copies: the ledger goes on)."""

    totals: Tally  # every message judged since start-up
    window: Tally  # messages that ended in the last WINDOW_S (settled)
    judged: int
    cpu_seconds: float  # process CPU spent in updates
    seconds: float  # how long the last update took
    failed: bool  # the last update could not read Jaeger
    watermark_s: float  # every message that ended before (Unix seconds) is judged


@dataclass
class _Pending:
    end_ns: int  # its last span's end when last read (plus the link grace: a client's)
    first_seen_s: float


class _Claims:
    """Which search parses a trace it returned: the first to claim it, unless the ledger has
    it already (judged, pending, or its verdict cached). Thread-safe."""

    def __init__(self, known: Iterable[Container[str]]) -> None:
        self._known = tuple(known)
        self._claimed: set[str] = set()
        self._lock = threading.Lock()
        # Every trace the update's searches parsed so far (where to cut a full answer's range).
        self.parsed: dict[str, list[TraceSpan]] = {}

    def __call__(self, trace_id: str) -> bool:
        with self._lock:
            if trace_id in self._claimed or any(trace_id in k for k in self._known):
                return False
            self._claimed.add(trace_id)
            return True


def _cuts(starts: list[int], start_us: int, end_us: int) -> list[int]:
    """Where to cut the range [start_us, end_us] of a search that answered in full, given
    where the matches it returned started (µs), each cut the first µs of a part. Jaeger
    answered with the matches it stored last, so below the earliest one it returned lie only
    matches it left out, often most of them (a burst's early ones); above, a part for each
    SEARCH_LIMIT / 2 of those it returned. (Halving a burst at the end of a long range would
    answer in full again at each level, sending its newest traces each time.) The middle when
    no start is known. Any cut is safe: the parts cover the range, and one that answers in
    full is cut again."""
    inside = sorted(t for t in starts if start_us <= t <= end_us)
    cuts = sorted({c for c in inside[:: SEARCH_LIMIT // 2] if start_us < c <= end_us})
    return cuts or [(start_us + end_us) // 2 + 1]


def _keep_ns(report: ChainReport) -> int:
    """How long after its end a trace can still be returned by a step of the look back: the
    widest step whose shortest duration the trace reaches."""
    duration_s = (report.end_ns - report.start_ns) / NS
    widths = [high - low for low, high in pairwise(STEPS_S) if low <= duration_s]
    return int(max(widths, default=STEPS_S[1]) * NS)


class AuditLedger:
    """Counters over every settled message's verdict, brought up to date by `update` (one
    caller at a time: `metrics.AuditMetrics` holds a lock around it)."""

    def __init__(
        self,
        auditor: Auditor,
        jaeger: LedgerJaeger,
        *,
        spec: ChainSpec | None = None,
        clock: Callable[[], float] = time.time,
        batch: int = BATCH,
    ) -> None:
        self._auditor = auditor
        self._jaeger = jaeger
        self._spec = spec or default_spec()
        self._clock = clock
        self._batch = batch
        # Jaeger may hold history from before the flow view started: the window's messages
        # are judged by the first update (so the window gauges are right at once and the
        # counters start with them); anything that ended earlier is left out.
        self._start_ns = int((clock() - SETTLE_S - WINDOW_S) * NS)
        self._watermark_ns = self._start_ns
        # Trace ids a later search may return again -> until when (ns of the watermark).
        self._seen: dict[str, int] = {}
        # And when each started (µs): where a full answer's range is cut (`_cuts`).
        self._seen_start_us: dict[str, int] = {}
        self._pending: dict[str, _Pending] = {}
        # Link mode: clients' traces that a judged message links to -> until when.
        self._linked: dict[str, int] = {}
        self._totals = Tally()
        self._buckets: dict[int, Tally] = {}
        self._window = Tally()
        self._judged = 0
        self._cpu_s = 0.0
        self._seconds = 0.0
        self._failed = False

    def state(self) -> LedgerState:
        return LedgerState(
            self._totals.copy(),
            self._window.copy(),
            self._judged,
            self._cpu_s,
            self._seconds,
            self._failed,
            self._watermark_ns / NS,
        )

    def update(self) -> LedgerState:
        """Judge what settled since the last update. Jaeger unreachable: the counters stay
        as they were, `failed` says so, and the next update reads the whole gap."""
        cpu, started = time.process_time(), time.perf_counter()
        try:
            self._advance(self._clock())
            self._failed = False
        except (JaegerError, httpx.HTTPError, ValueError):
            # ValueError: an answer that is not Jaeger's JSON (a proxy's error page).
            self._failed = True
        finally:
            self._cpu_s += time.process_time() - cpu
            self._seconds = time.perf_counter() - started
        return self.state()

    def _advance(self, now_s: float) -> None:
        settled_ns = int((now_s - SETTLE_S) * NS)
        found_ids, traces = self._find(settled_ns)
        found = [t for t in found_ids if t not in self._pending]
        due = [
            t
            for t, p in self._pending.items()
            if p.end_ns <= settled_ns or now_s - p.first_seen_s > MAX_MESSAGE_S
        ]
        todo = (due + found)[: self._batch]
        verdicts = self._judge(todo, traces)
        # Linking traces first: a client's trace they link to is then left out.
        for trace_id in sorted(todo, key=lambda t: _is_client_only(verdicts[t])):
            self._settle(trace_id, verdicts[trace_id], settled_ns, now_s)
        if len(due) + len(found) <= self._batch:
            self._watermark_ns = max(self._watermark_ns, settled_ns)
        self._forget()
        self._refresh_window(settled_ns)

    def _find(self, settled_ns: int) -> tuple[list[str], dict[str, list[TraceSpan]]]:
        """Trace ids of messages whose span may have ended since the watermark (new ones
        only): each layer's message span, over each step of the look back; and the spans of
        those new ones that are neither pending nor cached (parsed once, whichever search
        returned them first)."""
        services = set(self._jaeger.services())
        watermark_us = self._watermark_ns // 1000
        claims = _Claims((self._seen, self._pending, self._auditor.cache))
        found: list[FoundTraces] = []
        for service, operation in self._spec.message_spans:
            if service not in services:
                continue
            for i, (near, far) in enumerate(pairwise(STEPS_S)):
                start_us = watermark_us - int(far * 1e6)
                # The first step reaches up to "settled": any span that started after the
                # watermark ended after it.
                end_us = settled_ns // 1000 if i == 0 else watermark_us - int(near * 1e6) - 1
                # One at a time (see the module's docstring).
                found.append(
                    self._search(service, operation, start_us, end_us, int(near * 1e6), claims)
                )
        ids = dict.fromkeys(t for answer in found for t in answer.trace_ids)
        traces = {t: spans for answer in found for t, spans in answer.traces.items()}
        return [t for t in ids if t not in self._seen], traces

    def _search(
        self,
        service: str,
        operation: str,
        start_us: int,
        end_us: int,
        min_duration_us: int,
        claims: _Claims,
    ) -> FoundTraces:
        """Every match in the range: a full answer may have left some out, so the range is
        cut until each part answers with fewer than the limit (the parts return the full
        answer's traces again: claimed already, they are not parsed again)."""
        if end_us < start_us:
            return FoundTraces([], {})
        found = self._jaeger.find_traces(
            service,
            operation,
            start_us=start_us,
            end_us=end_us,
            min_duration_us=min_duration_us,
            limit=SEARCH_LIMIT,
            wanted=claims,
        )
        claims.parsed.update(found.traces)
        if len(found.trace_ids) < SEARCH_LIMIT or end_us == start_us:
            return found
        # Where the matches it returned started: their spans' starts, or (judged already)
        # their traces'.
        starts = [
            s.start_ns // 1000
            for t in found.trace_ids
            for s in claims.parsed.get(t, ())
            if (s.service, s.name) == (service, operation)
        ]
        starts += [
            self._seen_start_us[t]
            for t in found.trace_ids
            if t not in claims.parsed and t in self._seen_start_us
        ]
        bounds = [start_us, *_cuts(starts, start_us, end_us), end_us + 1]
        parts = [
            self._search(service, operation, low, high - 1, min_duration_us, claims)
            for low, high in pairwise(bounds)
        ]
        return FoundTraces(
            [t for part in parts for t in part.trace_ids],
            found.traces | {t: spans for part in parts for t, spans in part.traces.items()},
        )

    def _judge(
        self, trace_ids: list[str], traces: dict[str, list[TraceSpan]]
    ) -> dict[str, Verdict | None]:
        """Each message's verdict: the shared cache's when a page or an earlier update has
        it, else its trace (as its search returned it, or read by id: a pending message) and
        session traces analysed by the flow view's auditor, which keeps it for the pages once
        settled. None: no such trace (any more)."""
        cache = self._auditor.cache
        cached = {t: v for t in trace_ids if (v := cache.get(t)) is not None}
        reads = TraceCache(self._jaeger.get_trace)
        reads.seed(traces)
        reads.prefetch([t for t in trace_ids if t not in cached])
        found: dict[str, Verdict | None] = {}
        for trace_id in trace_ids:
            if trace_id in cached:
                found[trace_id] = cached[trace_id]
                continue
            spans = reads(trace_id)
            found[trace_id] = self._auditor.verdict(spans, reads) if spans else None
        return found

    def _settle(
        self, trace_id: str, verdict: Verdict | None, settled_ns: int, now_s: float
    ) -> None:
        pending = self._pending.pop(trace_id, None)
        if verdict is None:
            # Gone from Jaeger (evicted): nothing to count, nothing a search returns again.
            return
        report = verdict.report
        grace_ns = int(LINK_GRACE_S * NS) if report.client_only else 0
        first_seen = pending.first_seen_s if pending else now_s
        if report.end_ns + grace_ns > settled_ns and now_s - first_seen <= MAX_MESSAGE_S:
            self._pending[trace_id] = _Pending(report.end_ns + grace_ns, first_seen)
            return
        self._seen[trace_id] = report.end_ns + _keep_ns(report)
        self._seen_start_us[trace_id] = report.start_ns // 1000
        self._judged += 1
        if report.end_ns <= self._start_ns:
            return  # before the flow view's start: see __init__
        if report.client_only and trace_id in self._linked:
            return  # a part of the message trace that links to it, counted there
        if report.client_trace_id:
            self._linked[report.client_trace_id] = report.end_ns + int(LINK_KEEP_S * NS)
        self._totals.add(verdict)
        bucket = self._buckets.setdefault(report.end_ns // int(BUCKET_S * NS), Tally())
        bucket.add(verdict)

    def _forget(self) -> None:
        """Drop the trace ids no later search can return (see `_keep_ns`)."""
        for kept in (self._seen, self._linked):
            for trace_id in [t for t, until in kept.items() if until < self._watermark_ns]:
                del kept[trace_id]
                if kept is self._seen:
                    del self._seen_start_us[trace_id]

    def _refresh_window(self, settled_ns: int) -> None:
        bucket_ns = int(BUCKET_S * NS)
        oldest = (settled_ns - int(WINDOW_S * NS)) // bucket_ns
        for key in [k for k in self._buckets if k < oldest]:
            del self._buckets[key]
        self._window = _sum(self._buckets.values())


def _sum(tallies: Iterable[Tally]) -> Tally:
    found = Tally()
    for tally in tallies:
        found.merge(tally)
    return found


def _is_client_only(verdict: Verdict | None) -> bool:
    return verdict is not None and verdict.report.client_only
