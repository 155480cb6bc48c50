"""Is one message's chain whole? The analysis behind `audit`, the assertions and `doctor`.

What a whole chain is comes from a chain spec (`omni_trace.traces.spec`; the default is this
project's stack): each layer's message span in the message trace, each child of its parent
layer's span, and the links that reach layers living in the connection's session trace. For
the default: the client's `chat.message` > the dashboard's `chat.relay` > OMNI2's
`chat.turn`, with `chat.relay` -> `upstream connect` and `chat.turn` -> Traefik's
`ReverseProxy` links into the session trace. (Traefik's entry span of a connection arrives
only when the connection closes, so the links target spans that arrive early.)

A layer may start its own trace and link to its parent's span instead (`parent_link`; the
dashboard's DASHBOARD_CLIENT_TRACE=link): that parent is found through the link, and its
trace is not a message trace of its own (`ChainReport.client_trace_id` names it, so the audit
does not count it twice).

The analysis goes in steps: the structure (each layer's span, parents), the links, the
latencies, and the verdict (where it broke or failed, and why).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from omni_trace.traces.jaeger import JaegerClient, TraceSpan
from omni_trace.traces.spec import ChainSpec, Layer, LinkRule, default_spec

# The default spec's layers and hops (milliseconds per message: hop latencies, time to first
# token at each layer, time in the model and in tools, the outermost layer's whole wait).
LAYERS = default_spec().layer_names
HOPS = default_spec().hops

SessionLookup = Callable[[str], list[TraceSpan]]


@dataclass
class ChainReport:
    trace_id: str
    start_ns: int = 0
    end_ns: int = 0
    conversation_id: str | None = None
    user_id: str | None = None
    layers: dict[str, bool] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)  # the chain is broken
    errors: list[str] = field(default_factory=list)  # the chain is whole, the message failed
    hops: dict[str, float | None] = field(default_factory=dict)  # milliseconds
    session_trace_ids: list[str] = field(default_factory=list)
    client_trace_id: str | None = None  # link mode: the client's trace the relay links to
    # The verdict: where the chain broke ("dashboard -> omni2": the hop into the first missing
    # layer) or, whole but failed, the layer of the deepest error span, which `cause` names.
    hop: str | None = None
    cause: str | None = None

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
            "hop": self.hop,
            "cause": self.cause,
        }


def _ancestors(span: TraceSpan, by_id: dict[str, TraceSpan]) -> list[str]:
    """Span ids above `span`, nearest first, as far as the trace holds them."""
    found: list[str] = []
    while span.parent_span_id and span.parent_span_id not in found:
        found.append(span.parent_span_id)
        if span.parent_span_id not in by_id:
            break
        span = by_id[span.parent_span_id]
    return found


class _Chain:
    """One message trace read through a spec, step by step."""

    def __init__(self, spec: ChainSpec, spans: Sequence[TraceSpan], lookup: SessionLookup) -> None:
        self.spec = spec
        self.spans = spans
        self.lookup = lookup
        self.report = ChainReport(trace_id=spans[0].trace_id if spans else "")
        self.report.layers = dict.fromkeys(spec.layer_names, False)
        self.found: dict[str, TraceSpan | None] = {}
        self.linked_parent: set[str] = set()  # layers whose parent span is in another trace
        self.traces: dict[str, list[TraceSpan]] = {}

    def _trace(self, trace_id: str, session: bool = True) -> list[TraceSpan]:
        if trace_id not in self.traces:
            self.traces[trace_id] = self.lookup(trace_id)
            if session:
                self.report.session_trace_ids.append(trace_id)
        return self.traces[trace_id]

    def _link(
        self,
        span: TraceSpan,
        role: str,
        target: Callable[[TraceSpan], bool],
        session: bool = True,
    ) -> tuple[str, str] | None:
        """The span's link with `role`. A store that keeps links without their attributes
        (Jaeger's Badger, Cassandra and Elasticsearch keep them as references) leaves no role
        to read: then the link whose target is what the role names (`target`) is that link."""
        for link in span.links:
            if link.attributes.get(self.spec.link_role_attribute) == role:
                return link.trace_id, link.span_id
        for link in span.links:
            if self.spec.link_role_attribute in link.attributes:
                continue
            linked = self._linked_span((link.trace_id, link.span_id), session)
            if linked is not None and target(linked):
                return link.trace_id, link.span_id
        return None

    def _linked_span(self, target: tuple[str, str], session: bool = True) -> TraceSpan | None:
        trace_id, span_id = target
        return next((s for s in self._trace(trace_id, session) if s.span_id == span_id), None)

    def structure(self) -> None:
        """Each layer's message span; a parent found through its link when the layer roots
        a trace of its own; which layers are missing; orphans and parents."""
        report, spec = self.report, self.spec
        for layer in spec.message_layers:
            self.found[layer.name] = next(
                (s for s in self.spans if layer.holds(s.service, s.name)), None
            )
        for layer in spec.message_layers:
            span = self.found[layer.name]
            if layer.parent_link is None or span is None or self.found.get(layer.parent or ""):
                continue
            outer = spec.layer(layer.parent or "")
            target = self._link(
                span,
                layer.parent_link,
                lambda s, o=outer: o.holds(s.service, s.name),  # type: ignore[misc]
                session=False,
            )
            if target is None:
                continue
            linked = self._linked_span(target, session=False)
            report.client_trace_id = target[0]
            if linked is not None and outer.holds(linked.service, linked.name):
                self.found[outer.name] = linked
                self.linked_parent.add(layer.name)
        for layer in spec.message_layers:
            present = self.found[layer.name] is not None
            report.layers[layer.name] = present
            if not present and not layer.optional:
                report.problems.append(f"missing layer {layer.name}")
        for span in self.spans:
            report.conversation_id = report.conversation_id or span.attributes.get(
                spec.conversation_attribute
            )
            report.user_id = report.user_id or span.attributes.get(spec.user_attribute)
        ids = {s.span_id for s in self.spans}
        for span in self.spans:
            if span.parent_span_id and span.parent_span_id not in ids:
                report.problems.append(f"orphan {span.service} {span.name} (parent not in trace)")
            if span.status == "ERROR":
                detail = span.status_message or span.attributes.get("error.type", "")
                report.errors.append(f"{span.service} {span.name}: {detail}".strip())
        by_id = {s.span_id: s for s in self.spans}
        for layer in spec.message_layers:
            span, parent = self.found[layer.name], self.found.get(layer.parent or "")
            if span is None or parent is None or layer.name in self.linked_parent:
                continue
            above = spec.layer(layer.parent or "").message
            if layer.nested:
                if parent.span_id not in _ancestors(span, by_id):
                    report.problems.append(f"{layer.message} is not under {above}")
            elif span.parent_span_id != parent.span_id:
                report.problems.append(f"{layer.message} is not a child of {above}")

    def links(self) -> None:
        """Each layer's required links, and the layers they prove (a gateway)."""
        for layer in self.spec.message_layers:
            span = self.found[layer.name]
            if span is not None:
                for rule in layer.links:
                    self._check_link(layer, span, rule)

    def _check_link(self, layer: Layer, span: TraceSpan, rule: LinkRule) -> None:
        problems = self.report.problems
        proves = self.spec.layer(rule.layer).services if rule.layer else ()
        target = self._link(
            span,
            rule.role,
            lambda s: s.name == rule.span if rule.layer is None else s.service in proves,
        )
        if target is None:
            hint = f" ({rule.hint})" if rule.hint else ""
            problems.append(f"missing link {layer.message} -> {rule.target}{hint}")
            return
        linked = self._linked_span(target)
        if rule.layer is None:
            if linked is None:
                problems.append(f"link target {rule.span} not in Jaeger")
            return
        proven = self.spec.layer(rule.layer)
        if linked is None:
            problems.append(f"missing layer {proven.name} (linked span not in Jaeger yet)")
        elif linked.service not in proven.services:
            problems.append(f"{layer.message} links to {linked.service}, not {proven.name}")
        else:
            self.report.layers[proven.name] = True

    def latencies(self) -> None:
        """Milliseconds: each layer's hop from its parent, time to first token per layer,
        time in the model and in tools, and the outermost layer's whole wait."""
        spec, hops, found = self.spec, self.report.hops, self.found
        for layer in spec.layers:
            if layer.parent:
                span, parent = found.get(layer.name), found.get(layer.parent)
                hops[f"{layer.parent}_to_{layer.name}"] = (
                    (span.start_ns - parent.start_ns) / 1e6 if span and parent else None
                )
        for layer in spec.message_layers:
            span = found[layer.name]
            hops[f"ttft_{layer.name}"] = (
                span.event_offset_ms(spec.first_token_event) if span else None
            )
        models = [s for s in self.spans if spec.model_spans.matches(s.service, s.name)]
        tools = [s for s in self.spans if spec.tool_spans.matches(s.service, s.name)]
        hops["model"] = sum(s.duration_ms for s in models) if models else None
        hops["tools"] = sum(s.duration_ms for s in tools) if tools else None
        outermost = next((found[x.name] for x in spec.message_layers if found[x.name]), None)
        hops["total"] = outermost.duration_ms if outermost else None

    def verdict(self) -> None:
        """Where the chain broke: the hop into the outermost missing layer (a layer proven by
        a link sits between the linking layer and its parent); else, for a whole chain whose
        message failed, the layer of the deepest error span, the one no other error explains."""
        spec, report = self.spec, self.report
        for layer in spec.message_layers:
            if not report.layers[layer.name] and not layer.optional:
                report.hop = f"{layer.parent} -> {layer.name}" if layer.parent else layer.name
                report.cause = f"no {layer.message} span from {'/'.join(layer.services)}"
                return
            for rule in layer.links:
                if rule.layer and not report.layers[rule.layer]:
                    via = [layer.parent] if layer.parent else []
                    report.hop = " -> ".join([*via, rule.layer, layer.name])
                    report.cause = next((p for p in report.problems if rule.layer in p), None)
                    return
        if report.problems:
            report.hop, report.cause = "chain", report.problems[0]
            return
        errors = [s for s in self.spans if s.status == "ERROR"]
        below_error = {
            ancestor
            for span in errors
            for ancestor in _ancestors(span, {s.span_id: s for s in self.spans})
        }
        deepest = [s for s in errors if s.span_id not in below_error]
        if deepest:
            span = deepest[0]
            layer_name = next(
                (x.name for x in spec.layers if span.service in x.services), span.service
            )
            detail = span.status_message or span.attributes.get("error.type", "")
            report.hop = layer_name
            report.cause = f"{span.service} {span.name}: {detail}".rstrip(": ")


def analyze_chain(
    spans: Sequence[TraceSpan], session_lookup: SessionLookup, spec: ChainSpec | None = None
) -> ChainReport:
    """Check one message trace (and, through its links, the session trace) against a spec
    (default: this project's stack). Broken: `problems`; whole but failed: `errors`."""
    chain = _Chain(spec or default_spec(), spans, session_lookup)
    if not spans:
        chain.report.problems.append("trace not found")
        return chain.report
    chain.report.start_ns = min(s.start_ns for s in spans)
    chain.report.end_ns = max(s.end_ns for s in spans)
    chain.structure()
    chain.links()
    chain.latencies()
    chain.verdict()
    return chain.report


def wait_for_chain(
    jaeger: JaegerClient,
    trace_id: str,
    timeout: float = 15.0,
    interval: float = 0.3,
    spec: ChainSpec | None = None,
) -> ChainReport:
    """Poll until the message chain is whole (or the timeout passes): the last report."""
    deadline = time.monotonic() + timeout
    while True:
        report = analyze_chain(jaeger.get_trace(trace_id), jaeger.get_trace, spec)
        if not report.broken or time.monotonic() >= deadline:
            return report
        time.sleep(interval)


def session_closed_and_whole(spans: Sequence[TraceSpan], spec: ChainSpec | None = None) -> bool:
    """A closed connection's session trace is whole: each gateway layer's entry span has
    arrived (Traefik exports it only when the connection closes) and no span lacks its
    parent."""
    ids = {s.span_id for s in spans}
    gateways = [layer for layer in (spec or default_spec()).layers if not layer.message]
    entries = all(
        any(s.service in layer.services and s.kind == "SERVER" for s in spans) for layer in gateways
    )
    return entries and all(not s.parent_span_id or s.parent_span_id in ids for s in spans)
