"""Is one message's chain whole? The analysis behind `audit`, the assertions and `doctor`.

A message trace should hold the client's `chat.message` > the dashboard's `chat.relay` >
OMNI2's `chat.turn`, and reach Traefik through links into the connection's session trace
(`chat.relay` -> `upstream connect`, `chat.turn` -> Traefik's `ReverseProxy`). Traefik's entry
span of a connection arrives only when the connection closes, so the links target spans that
arrive early (upstream connect, ReverseProxy), never that entry span.

A dashboard in `link` mode (DASHBOARD_CLIENT_TRACE=link) roots each message trace at its own
`chat.relay` and links to the client's `chat.message`, which stays in the client's trace: the
client layer is then found through that link, and the client's trace is not a message trace
of its own (`ChainReport.client_trace_id` names it, so the audit does not count it twice).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from omni_trace.jaeger import JaegerClient, TraceSpan
from otel.names import CLIENTS, Attr, Event, LinkRole, Service, SpanName

LAYERS = ("client", "dashboard", "traefik", "omni2")
# Milliseconds reported per message: hop latencies, time to first token at each layer,
# time in the model and in tools, and the client's whole wait.
HOPS = (
    "client_to_dashboard",
    "dashboard_to_omni2",
    "ttft_client",
    "ttft_dashboard",
    "ttft_omni2",
    "model",
    "tools",
    "total",
)

SessionLookup = Callable[[str], list[TraceSpan]]


@dataclass
class ChainReport:
    trace_id: str
    start_ns: int = 0
    end_ns: int = 0
    conversation_id: str | None = None
    user_id: str | None = None
    layers: dict[str, bool] = field(default_factory=lambda: dict.fromkeys(LAYERS, False))
    problems: list[str] = field(default_factory=list)  # the chain is broken
    errors: list[str] = field(default_factory=list)  # the chain is whole, the message failed
    hops: dict[str, float | None] = field(default_factory=dict)  # milliseconds
    session_trace_ids: list[str] = field(default_factory=list)
    client_trace_id: str | None = None  # link mode: the client's trace the relay links to

    @property
    def broken(self) -> bool:
        return bool(self.problems)

    @property
    def status(self) -> str:
        if self.problems:
            return "BROKEN: " + "; ".join(self.problems)
        if self.errors:
            return "ERROR: " + "; ".join(self.errors)
        return "ok"

    def as_dict(self) -> dict[str, Any]:
        return {
            "trace_id": self.trace_id,
            "start_unix_ms": self.start_ns // 1_000_000,
            "conversation_id": self.conversation_id,
            "user_id": self.user_id,
            "layers": self.layers,
            "hops_ms": self.hops,
            "broken": self.broken,
            "problems": self.problems,
            "errors": self.errors,
            "session_trace_ids": self.session_trace_ids,
            "client_trace_id": self.client_trace_id,
        }


def _first(spans: list[TraceSpan], services: tuple[str, ...], name: str) -> TraceSpan | None:
    found = [s for s in spans if s.service in services and s.name == name]
    return found[0] if found else None


def _link(span: TraceSpan, role: str) -> tuple[str, str] | None:
    for link in span.links:
        if link.attributes.get(Attr.LINK_ROLE) == role:
            return link.trace_id, link.span_id
    return None


def analyze_chain(spans: list[TraceSpan], session_lookup: SessionLookup) -> ChainReport:
    """Check one message trace (and, through its links, the session trace)."""
    report = ChainReport(trace_id=spans[0].trace_id if spans else "")
    if not spans:
        report.problems.append("trace not found")
        return report
    report.start_ns = min(s.start_ns for s in spans)
    report.end_ns = max(s.end_ns for s in spans)
    message = _first(spans, CLIENTS, SpanName.MESSAGE)
    relay = _first(spans, (Service.DASHBOARD,), SpanName.RELAY)
    turn = _first(spans, (Service.OMNI2,), SpanName.TURN)
    linked_message = False
    client_link = _link(relay, LinkRole.CLIENT) if relay is not None and not message else None
    if client_link is not None:
        client_spans = session_lookup(client_link[0])
        message = next((s for s in client_spans if s.span_id == client_link[1]), None)
        if message is not None and (
            message.service not in CLIENTS or message.name != SpanName.MESSAGE
        ):
            message = None
        report.client_trace_id = client_link[0]
        linked_message = message is not None
    report.layers.update(
        client=message is not None, dashboard=relay is not None, omni2=turn is not None
    )
    for layer, span in (("client", message), ("dashboard", relay), ("omni2", turn)):
        if span is None:
            report.problems.append(f"missing layer {layer}")
    for span in spans:
        report.conversation_id = report.conversation_id or span.attributes.get(Attr.CONVERSATION_ID)
        report.user_id = report.user_id or span.attributes.get(Attr.USER_ID)

    ids = {s.span_id for s in spans}
    for span in spans:
        if span.parent_span_id and span.parent_span_id not in ids:
            report.problems.append(f"orphan {span.service} {span.name} (parent not in trace)")
        if span.status == "ERROR":
            detail = span.status_message or span.attributes.get(Attr.ERROR_TYPE, "")
            report.errors.append(f"{span.service} {span.name}: {detail}".strip())
    if message and relay and not linked_message and relay.parent_span_id != message.span_id:
        report.problems.append("chat.relay is not a child of chat.message")
    if relay and turn and turn.parent_span_id != relay.span_id:
        report.problems.append("chat.turn is not a child of chat.relay")

    sessions: dict[str, list[TraceSpan]] = {}

    def linked_span(target: tuple[str, str]) -> TraceSpan | None:
        trace_id, span_id = target
        if trace_id not in sessions:
            sessions[trace_id] = session_lookup(trace_id)
            report.session_trace_ids.append(trace_id)
        return next((s for s in sessions[trace_id] if s.span_id == span_id), None)

    if relay is not None:
        target = _link(relay, LinkRole.UPSTREAM_CONNECT)
        if target is None:
            report.problems.append("missing link chat.relay -> upstream connect")
        elif linked_span(target) is None:
            report.problems.append("link target upstream connect not in Jaeger")
    if turn is not None:
        target = _link(turn, LinkRole.GATEWAY)
        gateway = linked_span(target) if target else None
        if target is None:
            report.problems.append("missing link chat.turn -> traefik (did not come through it?)")
        elif gateway is None:
            report.problems.append("missing layer traefik (linked span not in Jaeger yet)")
        elif gateway.service != Service.TRAEFIK:
            report.problems.append(f"chat.turn links to {gateway.service}, not traefik")
        else:
            report.layers["traefik"] = True

    if message and relay:
        report.hops["client_to_dashboard"] = (relay.start_ns - message.start_ns) / 1e6
    if relay and turn:
        report.hops["dashboard_to_omni2"] = (turn.start_ns - relay.start_ns) / 1e6
    report.hops["ttft_client"] = message.event_offset_ms(Event.FIRST_TOKEN) if message else None
    report.hops["ttft_dashboard"] = relay.event_offset_ms(Event.FIRST_TOKEN) if relay else None
    models = [s for s in spans if s.service == Service.OMNI2 and s.name.startswith("chat ")]
    if turn is not None:
        report.hops["ttft_omni2"] = turn.event_offset_ms(Event.FIRST_TOKEN)
        chunk = models[0].attributes.get(Attr.TIME_TO_FIRST_CHUNK) if models else None
        if report.hops["ttft_omni2"] is None and isinstance(chunk, int | float):
            # Older OMNI2 without the event: the first model call's first chunk.
            report.hops["ttft_omni2"] = (models[0].start_ns - turn.start_ns) / 1e6 + chunk * 1000
    report.hops["model"] = sum(s.duration_ms for s in models) if models else None
    tools = [s for s in spans if s.name.startswith("execute_tool")]
    report.hops["tools"] = sum(s.duration_ms for s in tools) if tools else None
    report.hops["total"] = (
        message.duration_ms if message else (relay.duration_ms if relay else None)
    )
    return report


def wait_for_chain(
    jaeger: JaegerClient, trace_id: str, timeout: float = 15.0, interval: float = 0.3
) -> ChainReport:
    """Poll until the message chain is whole (or the timeout passes): the last report."""
    deadline = time.monotonic() + timeout
    while True:
        report = analyze_chain(jaeger.get_trace(trace_id), jaeger.get_trace)
        if not report.broken or time.monotonic() >= deadline:
            return report
        time.sleep(interval)


def session_closed_and_whole(spans: list[TraceSpan]) -> bool:
    """A closed connection's session trace is whole: Traefik's entry span has arrived (it is
    exported only when the connection closes) and no span lacks its parent."""
    ids = {s.span_id for s in spans}
    entry = any(s.service == Service.TRAEFIK and s.kind == "SERVER" for s in spans)
    return entry and all(not s.parent_span_id or s.parent_span_id in ids for s in spans)
