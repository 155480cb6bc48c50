"""What the flow view shows, assembled from Jaeger with the audit's own chain analysis.

Every verdict here is `omni_trace.chain.analyze_chain`'s, found the way `omni-trace audit`
finds messages, so the page and the audit cannot disagree about a chain.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from omni_trace.audit import MESSAGE_SPANS, AuditQuery, run_audit
from omni_trace.chain import ChainReport
from omni_trace.jaeger import JaegerClient, TraceSpan
from otel.names import Service, SpanName

TRACE_ID = re.compile(r"[0-9a-f]{32}")
# Conversation and user ids as OMNI2 and `omni-trace users` make them.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,127}")
MAX_SINCE_S = 7 * 24 * 3600.0


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


def span_dict(span: TraceSpan) -> dict[str, Any]:
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
    }


def _kind(spans: list[TraceSpan]) -> str:
    """A message trace, a session (connection) trace, or neither."""
    if any((s.service, s.name) in MESSAGE_SPANS for s in spans):
        return "message"
    if any(s.name == SpanName.CONNECT or s.service == Service.TRAEFIK for s in spans):
        return "session"
    return "other"


class FlowData:
    def __init__(self, jaeger: JaegerClient) -> None:
        self.jaeger = jaeger

    def _messages(self, query: AuditQuery) -> list[ChainReport]:
        # The page shows what Jaeger holds now; the audit's wait for late spans is for CI.
        return run_audit(self.jaeger, query, settle_s=0)

    def conversations(
        self, *, user_id: str | None = None, since_s: float = 3600.0, page: Page = Page()
    ) -> dict[str, Any]:
        """Conversations with messages in the window, newest first."""
        by_conversation: dict[str, list[ChainReport]] = {}
        for report in self._messages(AuditQuery(user_id=user_id, since_s=since_s)):
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
        reports = self._messages(AuditQuery(conversation_id=conversation_id, since_s=since_s))
        sessions = list(dict.fromkeys(t for r in reports for t in r.session_trace_ids))
        return _summary(conversation_id, reports) | {
            "messages": [r.as_dict() for r in reports],
            "session_trace_ids": sessions,
        }

    def trace(self, trace_id_: str) -> dict[str, Any]:
        """A trace's spans, and the traces its spans link to (a message trace's session)."""
        spans = self.jaeger.get_trace(trace_id_)
        linked = {link.trace_id for s in spans for link in s.links} - {trace_id_}
        return {
            "trace_id": trace_id_,
            "kind": _kind(spans),
            "spans": [span_dict(s) for s in spans],
            "linked_trace_ids": sorted(linked),
        }

    def search(self, text: str) -> dict[str, Any]:
        """Where a pasted id leads: a trace of either kind, a conversation, or a user."""
        text = text.strip()
        if TRACE_ID.fullmatch(text.lower()):
            spans = self.jaeger.get_trace(text.lower())
            if spans:
                return {"view": "trace", "trace_id": text.lower(), "kind": _kind(spans)}
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
    }
