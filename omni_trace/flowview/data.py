"""What the flow view shows, assembled from Jaeger with the audit's own chain analysis.

Every verdict here is `omni_trace.traces.chain.analyze_chain`'s, found the way `omni-trace audit`
finds messages, so the page and the audit cannot disagree about a chain.
"""

from __future__ import annotations

import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from omni_trace.traces.audit import AuditQuery, find_message_traces
from omni_trace.traces.chain import ChainReport, SessionLookup, analyze_chain
from omni_trace.traces.critical_path import critical_path
from omni_trace.traces.diff import diff_traces
from omni_trace.traces.jaeger import JaegerClient, TraceSpan
from omni_trace.traces.spec import ChainSpec, default_spec
from otel.names import Attr, Service, SpanName

TRACE_ID = re.compile(r"[0-9a-f]{32}")
# Conversation and user ids as OMNI2 and `omni-trace users` make them.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,127}")
MAX_SINCE_S = 7 * 24 * 3600.0
# A message whose last span ended this long ago has all its spans: its verdict is final.
SETTLE_S = 10.0


class BadQuery(ValueError):
    """A parameter the view cannot use (answered with 400 and this text)."""


def trace_id(value: str) -> str:
    value = value.strip().lower()
    if not TRACE_ID.fullmatch(value):
        raise BadQuery("a trace id is 32 hexadecimal characters")
    return value


def name(value: str, what: str) -> str:
    value = value.strip()
    if not NAME.fullmatch(value):
        raise BadQuery(f"{what}: letters, digits and . _ @ - only, at most 128 characters")
    return value


def since(value: float) -> float:
    if not 1 <= value <= MAX_SINCE_S:
        raise BadQuery(f"since: between 1 s and {MAX_SINCE_S:.0f} s")
    return value


@dataclass(frozen=True)
class Page:
    number: int = 0
    size: int = 50

    def __post_init__(self) -> None:
        if not 0 <= self.number <= 10_000 or not 1 <= self.size <= 200:
            raise BadQuery("page: 0..10000; page size: 1..200")


def span_role(span: TraceSpan, spec: ChainSpec) -> str | None:
    """What `spec` times the span as, "model" or "tool" (its model_spans and tool_spans: the
    audit's hops "model" and "tools", omni_trace/traces/chain.py); None for every other span."""
    if spec.model_spans.matches(span.service, span.name):
        return "model"
    if spec.tool_spans.matches(span.service, span.name):
        return "tool"
    return None


def span_dict(span: TraceSpan, spec: ChainSpec) -> dict[str, Any]:
    return {
        "trace_id": span.trace_id,
        "span_id": span.span_id,
        "parent_span_id": span.parent_span_id,
        "name": span.name,
        "service": span.service,
        "kind": span.kind,
        "start_unix_ns": span.start_ns,
        "duration_ms": span.duration_ms,
        "attributes": span.attributes,
        "events": [
            {"name": e.name, "offset_ms": (e.time_ns - span.start_ns) / 1e6} for e in span.events
        ],
        "links": [
            {"trace_id": link.trace_id, "span_id": link.span_id, "attributes": link.attributes}
            for link in span.links
        ],
        "status": span.status,
        "status_message": span.status_message,
        "role": span_role(span, spec),
    }


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _total(values: list[int | None]) -> int | None:
    known = [v for v in values if v is not None]
    return sum(known) if known else None


def turn_summary(
    spans: list[TraceSpan], report: ChainReport, spec: ChainSpec | None = None
) -> dict[str, Any]:
    """How a message ended and what it used, from its spans' GenAI and chat.* attributes.

    outcome: `ok`, `refused` (a check of OMNI2 said no: rate or usage limit, permission),
    `error` (the audit found error spans: the model, a tool, a lost client) — the chain's
    wholeness is the report's, shown beside it, not folded in here.
    """
    turn = next((s for s in spans if (s.service, s.name) == (Service.OMNI2, SpanName.TURN)), None)
    denied = next((s for s in spans if s.attributes.get(Attr.CHECK_RESULT) == "deny"), None)
    # The spans the audit times as "model" and "tools" (the MCP SDK's own tools/call spans name
    # the same GenAI operation: they are the tool call seen from below, not another one).
    spec = spec or default_spec()
    models = [s for s in spans if span_role(s, spec) == "model"]
    tools = [s for s in spans if span_role(s, spec) == "tool"]
    failed = [s for s in spans if s.status == "ERROR"]
    if denied is not None:
        outcome, cause = "refused", denied
    elif report.errors:
        # OMNI2's own account first: it names the model or tool that failed the turn.
        outcome = "error"
        cause = turn if turn is not None and turn.status == "ERROR" else failed[0]
    else:
        outcome, cause = "ok", None
    return {
        "outcome": outcome,
        "reason": (cause.status_message or None) if cause else None,
        "error_type": cause.attributes.get(Attr.ERROR_TYPE) if cause else None,
        "model_calls": [
            {
                "provider": m.attributes.get(Attr.GEN_AI_PROVIDER),
                # The model that answered when the provider said; the one asked for if not.
                "model": m.attributes.get(Attr.GEN_AI_RESPONSE_MODEL)
                or m.attributes.get(Attr.GEN_AI_REQUEST_MODEL),
                "input_tokens": _count(m.attributes.get(Attr.GEN_AI_INPUT_TOKENS)),
                "output_tokens": _count(m.attributes.get(Attr.GEN_AI_OUTPUT_TOKENS)),
                "duration_ms": m.duration_ms,
                "ok": m.status != "ERROR",
                "error_type": m.attributes.get(Attr.ERROR_TYPE),
            }
            for m in models
        ],
        "input_tokens": _total(
            [_count(m.attributes.get(Attr.GEN_AI_INPUT_TOKENS)) for m in models]
        ),
        "output_tokens": _total(
            [_count(m.attributes.get(Attr.GEN_AI_OUTPUT_TOKENS)) for m in models]
        ),
        # OMNI2 prices a turn it answered (its settings' prices); a failed turn has no cost.
        "cost_usd": _number(turn.attributes.get(Attr.USAGE_COST)) if turn else None,
        "tool_calls": [
            {
                "name": t.attributes.get(Attr.GEN_AI_TOOL_NAME),
                "call_id": t.attributes.get(Attr.GEN_AI_TOOL_CALL_ID),
                "duration_ms": t.duration_ms,
                # chat.tool.status is the tool's real outcome; the span status when absent.
                "ok": t.attributes.get(Attr.TOOL_STATUS, "ok") == "ok" and t.status != "ERROR",
                "error": t.status_message or None,
            }
            for t in tools
        ],
    }


def _kind(spans: list[TraceSpan], spec: ChainSpec) -> str:
    """A message trace, a session (connection) trace, or neither."""
    if any((s.service, s.name) in spec.message_spans for s in spans):
        return "message"
    if any(s.name == SpanName.CONNECT or s.service == Service.TRAEFIK for s in spans):
        return "session"
    return "other"


class TraceCache:
    """Traces read once each through `read`, the missing ones of a list side by side."""

    def __init__(self, read: Callable[[str], list[TraceSpan]], workers: int = 8) -> None:
        self._read = read
        self._workers = workers
        self._traces: dict[str, list[TraceSpan]] = {}

    def seed(self, traces: dict[str, list[TraceSpan]]) -> None:
        """Traces already in hand (a search's answer): not read again."""
        self._traces.update(traces)

    def __call__(self, trace_id: str) -> list[TraceSpan]:
        if trace_id not in self._traces:
            self._traces[trace_id] = self._read(trace_id)
        return self._traces[trace_id]

    def prefetch(self, trace_ids: list[str]) -> None:
        missing = [t for t in dict.fromkeys(trace_ids) if t not in self._traces]
        if len(missing) < 2:
            return
        with ThreadPoolExecutor(min(self._workers, len(missing))) as pool:
            self._traces.update(zip(missing, pool.map(self._read, missing), strict=True))


class Snapshot(JaegerClient):
    """Jaeger as one request of the view reads it: each trace fetched once, so that the audit
    and the usage summary read the same spans, and the message traces fetched side by side,
    so that a conversation of hundreds of messages does not wait on as many round trips in a
    row. Lives for one request only: a trace may still be growing."""

    def __init__(self, jaeger: JaegerClient, workers: int = 8) -> None:
        # The client's connection pool is shared (httpx clients are thread-safe); nothing of
        # its own to close.
        self.query_url = jaeger.query_url
        self._http = jaeger._http
        self._traces = TraceCache(super().get_trace, workers)
        self._searches: dict[tuple[Any, ...], list[str]] = {}

    def get_trace(self, trace_id: str) -> list[TraceSpan]:
        return self._traces(trace_id)

    def prefetch(self, trace_ids: list[str]) -> None:
        self._traces.prefetch(trace_ids)

    def find_trace_ids(
        self,
        service: str,
        tags: dict[str, str] | None = None,
        *,
        lookback: str = "1h",
        limit: int = 100,
        operation: str | None = None,
        start_us: int | None = None,
        end_us: int | None = None,
    ) -> list[str]:
        # The audit searches again what `FlowData._messages` searched a moment before (its
        # window ends "now"): within one request that is the same search.
        key = (service, tuple(sorted((tags or {}).items())), lookback, limit, operation)
        if key not in self._searches:
            self._searches[key] = super().find_trace_ids(
                service,
                tags,
                lookback=lookback,
                limit=limit,
                operation=operation,
                start_us=start_us,
                end_us=end_us,
            )
        return self._searches[key]


@dataclass(frozen=True)
class Verdict:
    """One message as the view shows it: the audit's chain report and how the turn ended."""

    report: ChainReport
    turn: dict[str, Any]


class VerdictCache:
    """Verdicts of settled messages, the least recently used dropped first.

    A message is settled when its last span ended `SETTLE_S` ago: the audit waits no longer
    for late spans (Traefik exports every 5 s), so its verdict cannot change and a settled
    message is analysed once, whichever request (a page, a Prometheus scrape) reads it first.
    Readers must not change what they get.
    """

    def __init__(self, size: int, settle_s: float = SETTLE_S) -> None:
        self.size = size
        self.settle_s = settle_s
        self._verdicts: OrderedDict[str, Verdict] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, trace_id_: str) -> Verdict | None:
        with self._lock:
            verdict = self._verdicts.get(trace_id_)
            if verdict is not None:
                self._verdicts.move_to_end(trace_id_)
            return verdict

    def keep(self, verdict: Verdict) -> None:
        end_ns = verdict.report.end_ns
        # end_ns 0: no span at all yet (a trace Jaeger has not got), never settled.
        if self.size == 0 or not 0 < end_ns <= (time.time() - self.settle_s) * 1e9:
            return
        with self._lock:
            self._verdicts[verdict.report.trace_id] = verdict
            self._verdicts.move_to_end(verdict.report.trace_id)
            while len(self._verdicts) > self.size:
                self._verdicts.popitem(last=False)

    def __len__(self) -> int:
        return len(self._verdicts)

    def __contains__(self, trace_id_: object) -> bool:
        """Whether a verdict is kept (without marking it used)."""
        with self._lock:
            return trace_id_ in self._verdicts


class Auditor:
    """The audit as `omni-trace audit` runs it (`run_audit`, with no wait for late spans: the
    view shows Jaeger as it is), each settled message's verdict taken from the cache."""

    def __init__(
        self, jaeger: JaegerClient, cache: VerdictCache, spec: ChainSpec | None = None
    ) -> None:
        self.jaeger = jaeger
        self.cache = cache
        self.spec = spec or default_spec()

    def audit(self, query: AuditQuery, snapshot: Snapshot | None = None) -> list[Verdict]:
        snapshot = snapshot or Snapshot(self.jaeger)
        trace_ids = find_message_traces(snapshot, query, self.spec)
        cached = {t: v for t in trace_ids if (v := self.cache.get(t)) is not None}
        # The rest fetched side by side.
        snapshot.prefetch([t for t in trace_ids if t not in cached])
        verdicts = [
            cached.get(t) or self.verdict(snapshot.get_trace(t), snapshot.get_trace)
            for t in trace_ids
        ]
        # Link mode: a client's own trace is a part of the message trace that links to it
        # (never a trace a server recorded: a client may link to any trace it likes).
        linked = {v.report.client_trace_id for v in verdicts if v.report.client_trace_id}
        return sorted(
            (v for v in verdicts if not (v.report.trace_id in linked and v.report.client_only)),
            key=lambda v: v.report.start_ns,
        )

    def verdict(self, spans: list[TraceSpan], lookup: SessionLookup) -> Verdict:
        """A message trace's verdict: the cached one once settled."""
        if spans and (cached := self.cache.get(spans[0].trace_id)) is not None:
            return cached
        report = analyze_chain(spans, lookup, self.spec)
        found = Verdict(report, turn_summary(spans, report, self.spec))
        self.cache.keep(found)
        return found


class FlowData:
    """`spec`: the chain spec the view judges messages by and marks spans with (the default
    one, omni_trace/traces/specs/omni2.yaml, if none)."""

    def __init__(
        self,
        jaeger: JaegerClient,
        cache: VerdictCache | None = None,
        spec: ChainSpec | None = None,
    ) -> None:
        self.jaeger = jaeger
        self.auditor = Auditor(jaeger, cache if cache is not None else VerdictCache(0), spec)
        self.spec = self.auditor.spec

    def _messages(self, query: AuditQuery, snapshot: Snapshot | None = None) -> list[Verdict]:
        return self.auditor.audit(query, snapshot)

    def conversations(
        self, *, user_id: str | None = None, since_s: float = 3600.0, page: Page = Page()
    ) -> dict[str, Any]:
        """Conversations with messages in the window, newest first."""
        by_conversation: dict[str, list[ChainReport]] = {}
        for verdict in self._messages(AuditQuery(user_id=user_id, since_s=since_s)):
            report = verdict.report
            if report.conversation_id:
                by_conversation.setdefault(report.conversation_id, []).append(report)
        summaries = sorted(
            (_summary(cid, reports) for cid, reports in by_conversation.items()),
            key=lambda s: s["last_unix_ms"],
            reverse=True,
        )
        start = page.number * page.size
        return {
            "conversations": summaries[start : start + page.size],
            "total": len(summaries),
            "page": page.number,
            "page_size": page.size,
        }

    def conversation(self, conversation_id: str, since_s: float = MAX_SINCE_S) -> dict[str, Any]:
        """Its messages as `omni-trace audit --json` gives them, and beside them (`turns`, by
        trace id) how each ended and what it used."""
        verdicts = self._messages(AuditQuery(conversation_id=conversation_id, since_s=since_s))
        reports = [v.report for v in verdicts]
        sessions = list(dict.fromkeys(t for r in reports for t in r.session_trace_ids))
        turns = {v.report.trace_id: v.turn for v in verdicts}
        return _summary(conversation_id, reports) | {
            # Of the messages with errors, those a check of OMNI2 refused.
            "refused": sum(t["outcome"] == "refused" for t in turns.values()),
            "messages": [r.as_dict() for r in reports],
            "turns": turns,
            "session_trace_ids": sessions,
        }

    def trace(self, trace_id_: str) -> dict[str, Any]:
        """A trace's spans, and the traces its spans link to (a message trace's session); a
        message trace also gets its chain report (the audit's) and its turn summary."""
        spans = self.jaeger.get_trace(trace_id_)
        linked = {link.trace_id for s in spans for link in s.links} - {trace_id_}
        kind = _kind(spans, self.spec)
        found: dict[str, Any] = {
            "trace_id": trace_id_,
            "kind": kind,
            "spans": [span_dict(s, self.spec) for s in spans],
            "linked_trace_ids": sorted(linked),
            "chain": None,
            "turn": None,
        }
        if kind == "message":
            verdict = self.auditor.verdict(spans, self.jaeger.get_trace)
            found |= {"chain": verdict.report.as_dict(), "turn": verdict.turn}
            # The spans that make up the message's time, for the waterfall to highlight.
            found["critical_path"] = critical_path(spans).as_dict()
        return found

    def diff(self, a: str, b: str) -> dict[str, Any]:
        """Two message traces compared (`omni-trace trace diff`): spans and layers in one
        only, time per hop (the audit's chain reports) and per span name."""
        traces = {t: self.jaeger.get_trace(t) for t in (a, b)}
        missing = [t for t, spans in traces.items() if not spans]
        if missing:
            return {"missing": missing}
        reports = {
            t: self.auditor.verdict(spans, self.jaeger.get_trace).report
            for t, spans in traces.items()
        }
        return diff_traces(traces[a], traces[b], reports[a], reports[b]).as_dict()

    def search(self, text: str) -> dict[str, Any]:
        """Where a pasted id leads: a trace of either kind, a conversation, or a user."""
        text = text.strip()
        if TRACE_ID.fullmatch(text.lower()):
            spans = self.jaeger.get_trace(text.lower())
            if spans:
                return {"view": "trace", "trace_id": text.lower(), "kind": _kind(spans, self.spec)}
        value = name(text, "search")
        if self._messages(AuditQuery(conversation_id=value, since_s=MAX_SINCE_S, limit=1)):
            return {"view": "conversation", "conversation_id": value}
        if self._messages(AuditQuery(user_id=value, since_s=MAX_SINCE_S, limit=1)):
            return {"view": "conversations", "user_id": value}
        return {"view": None, "error": f"no trace, conversation or user {value!r} in Jaeger"}


def _summary(conversation_id: str, reports: list[ChainReport]) -> dict[str, Any]:
    users = [r.user_id for r in reports if r.user_id]
    return {
        "conversation_id": conversation_id,
        "user_id": users[0] if users else None,
        "started_unix_ms": min((r.start_ns for r in reports), default=0) // 1_000_000,
        "last_unix_ms": max((r.start_ns for r in reports), default=0) // 1_000_000,
        "messages": len(reports),
        "broken": sum(r.broken for r in reports),
        "errors": sum(bool(r.errors) for r in reports),
        "not_traced": sum(bool(r.not_traced) and not r.broken for r in reports),
    }
