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
from omni_trace.traces.streams import (
    DEFAULT_STALL_MS,
    LayerStream,
    Stall,
    added_by_layer,
    judge_stall,
)

# The default spec's layers and hops (milliseconds per message: hop latencies, time to first
# token at each layer, time in the model and in tools, the outermost layer's whole wait).
LAYERS = default_spec().layer_names
HOPS = default_spec().hops

SessionLookup = Callable[[str], list[TraceSpan]]


# What became of each layer in one message's chain.
PRESENT = "present"
MISSING = "missing"
NOT_TRACED = "not traced"  # a later layer recorded that it was not there (or not traced)


@dataclass
class ChainReport:
    trace_id: str
    start_ns: int = 0
    end_ns: int = 0
    conversation_id: str | None = None
    user_id: str | None = None
    layers: dict[str, bool] = field(default_factory=dict)  # present or not
    layer_states: dict[str, str] = field(default_factory=dict)  # PRESENT, MISSING, NOT_TRACED
    # Why each layer not traced is not expected: the witness span's own record.
    not_traced_because: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)  # the chain is broken
    errors: list[str] = field(default_factory=list)  # the chain is whole, the message failed
    hops: dict[str, float | None] = field(default_factory=dict)  # milliseconds
    session_trace_ids: list[str] = field(default_factory=list)
    client_trace_id: str | None = None  # link mode: the client's trace the relay links to
    # The verdict: where the chain broke ("dashboard -> omni2": the hop into the first missing
    # layer) or, whole but failed, the layer of the deepest error span, which `cause` names.
    hop: str | None = None
    cause: str | None = None
    # Spans from the public path that are not this message's (not the parent its first hop
    # recorded, nor below it): someone else's word, left out of the analysis.
    foreign: list[str] = field(default_factory=list)
    # Only public layers recorded it: the client's word alone, nothing a server confirms.
    client_only: bool = False
    # Streaming per hop (omni_trace.traces.streams): each layer's gaps between token frames
    # from its message span, and the hop that held the tokens, if one did.
    streams: dict[str, LayerStream] = field(default_factory=dict)
    stall: Stall | None = None

    def judge_stall(self, stall_ms: float = DEFAULT_STALL_MS) -> Stall | None:
        """Name the hop that added the largest stall past `stall_ms` (again, with another
        threshold: `audit --stall-ms`)."""
        self.stall = judge_stall(self.streams, list(self.layers), stall_ms)
        return self.stall

    @property
    def broken(self) -> bool:
        return bool(self.problems)

    @property
    def whole(self) -> bool:
        """Not broken, and recorded by a server layer (not the client's word alone)."""
        return not self.problems and not self.client_only

    @property
    def not_traced(self) -> list[str]:
        return [name for name, state in self.layer_states.items() if state == NOT_TRACED]

    @property
    def first_layer(self) -> str | None:
        """The outermost layer that recorded the message: where its hops are measured from."""
        return next((name for name, seen in self.layers.items() if seen), None)

    @property
    def status(self) -> str:
        if self.problems:
            return "BROKEN: " + "; ".join(self.problems)
        if self.client_only:
            return "CLIENT ONLY: no server layer recorded it (the client's word alone)"
        if self.errors:
            return "ERROR: " + "; ".join(self.errors)
        if self.not_traced:
            return f"ok ({', '.join(self.not_traced)} not traced)"
        return "ok"

    def as_dict(self) -> dict[str, Any]:
        return {
            "trace_id": self.trace_id,
            "start_unix_ms": self.start_ns // 1_000_000,
            "conversation_id": self.conversation_id,
            "user_id": self.user_id,
            "layers": self.layers,
            "layer_states": self.layer_states,
            "not_traced": self.not_traced,
            "not_traced_because": self.not_traced_because,
            "first_layer": self.first_layer,
            "hops_ms": self.hops,
            "broken": self.broken,
            "problems": self.problems,
            "errors": self.errors,
            "session_trace_ids": self.session_trace_ids,
            "client_trace_id": self.client_trace_id,
            "hop": self.hop,
            "cause": self.cause,
            "foreign": self.foreign,
            "client_only": self.client_only,
            "streams": {name: stream.as_dict() for name, stream in self.streams.items()},
            "stream_added_ms": added_by_layer(self.streams, list(self.layers)),
            "stall": self.stall.as_dict() if self.stall else None,
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
        self.spans = list(spans)
        self.lookup = lookup
        self.report = ChainReport(trace_id=spans[0].trace_id if spans else "")
        self.report.layers = dict.fromkeys(spec.layer_names, False)
        self.found: dict[str, TraceSpan | None] = {}
        self.linked_parent: set[str] = set()  # layers whose parent span is in another trace
        self.traces: dict[str, list[TraceSpan]] = {}
        self._public_services = {s for layer in spec.layers if layer.public for s in layer.services}
        # Per layer with `expected_when`: True, its witness says it was there; False, says it
        # was not (or not traced); absent, no witness (expected).
        self.expected: dict[str, bool] = {}
        self.witness: dict[str, str] = {}  # ... and the layer that said so

    def public(self, span: TraceSpan) -> bool:
        """Came by the public path: the collector's stamp, or a public layer's service."""
        mark = self.spec.public_attribute
        if mark is not None and span.attributes.get(mark[0]) == mark[1]:
            return True
        return span.service in self._public_services

    def holds(self, layer: Layer, span: TraceSpan) -> bool:
        """`span` is `layer`'s message span: a public span is never a server layer's."""
        return layer.holds(span.service, span.name) and (layer.public or not self.public(span))

    def _trace(self, trace_id: str, session: bool = True) -> list[TraceSpan]:
        if trace_id not in self.traces:
            self.traces[trace_id] = self.lookup(trace_id)
        # Listed once it is read as a session trace, even if first read for another reason
        # (a link without its role, followed to see what it points at).
        if session and trace_id not in self.report.session_trace_ids:
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
        """The span a link names; a server's over a public span that took the same id."""
        trace_id, span_id = target
        named = [s for s in self._trace(trace_id, session) if s.span_id == span_id]
        return min(named, key=self.public, default=None)

    def structure(self) -> None:
        """Each layer's message span; a parent found through its link when the layer roots
        a trace of its own; which layers later ones say were not there; the public layers'
        spans (the parents the next layer recorded) and the foreign ones; orphans, parents."""
        report, spec = self.report, self.spec
        for layer in spec.message_layers:
            found = (
                None
                if layer.public
                else next((s for s in self.spans if self.holds(layer, s)), None)
            )
            self.found[layer.name] = found
        self._linked_parents()
        self._expectations()
        for layer in spec.message_layers:
            if layer.public and self.found[layer.name] is None:
                self.found[layer.name] = self._recorded_parent(layer)
        self._leave_out_foreign()
        for layer in spec.message_layers:
            report.layers[layer.name] = self.found[layer.name] is not None
        # A server's record of the conversation and user first; a client's says only what
        # the client claims (all there is when no server recorded the message).
        for span in sorted(self.spans, key=self.public):
            report.conversation_id = report.conversation_id or span.attributes.get(
                spec.conversation_attribute
            )
            report.user_id = report.user_id or span.attributes.get(spec.user_attribute)
        ids = {s.span_id for s in self.spans}
        first = self._first_traced()
        for span in self.spans:
            if span.parent_span_id and span.parent_span_id not in ids and span is not first:
                report.problems.append(f"orphan {span.service} {span.name} (parent not in trace)")
            if span.status == "ERROR":
                detail = span.status_message or span.attributes.get("error.type", "")
                report.errors.append(f"{span.service} {span.name}: {detail}".strip())
        by_id = {s.span_id: s for s in self.spans}
        for layer in spec.message_layers:
            outer = self._effective_parent(layer)
            inner, parent = self.found[layer.name], self.found.get(outer or "")
            if inner is None or parent is None or layer.name in self.linked_parent:
                continue
            above = spec.layer(outer or "").message
            if layer.nested:
                if parent.span_id not in _ancestors(inner, by_id):
                    report.problems.append(f"{layer.message} is not under {above}")
            elif inner.parent_span_id != parent.span_id:
                report.problems.append(f"{layer.message} is not a child of {above}")

    def _linked_parents(self) -> None:
        """A layer that roots its own trace links to its parent's span (another trace)."""
        spec = self.spec
        for layer in spec.message_layers:
            span = self.found[layer.name]
            if layer.parent_link is None or span is None or self.found.get(layer.parent or ""):
                continue
            outer = spec.layer(layer.parent or "")
            target = self._link(
                span,
                layer.parent_link,
                lambda s, o=outer: self.holds(o, s),  # type: ignore[misc]
                session=False,
            )
            if target is None:
                continue
            linked = self._linked_span(target, session=False)
            self.report.client_trace_id = target[0]
            if linked is not None and self.holds(outer, linked):
                self.found[outer.name] = linked
                self.linked_parent.add(layer.name)

    def _expectations(self) -> None:
        """Each layer with `expected_when`: what its witness (the first later layer present
        whose span carries the attribute) says about it."""
        layers = self.spec.layers
        for i, layer in enumerate(layers):
            rule = layer.expected_when
            if rule is None:
                continue
            later_spans = (self.found.get(later.name) for later in layers[i + 1 :])
            witness = next(
                (span for span in later_spans if span is not None and rule.key in span.attributes),
                None,
            )
            if witness is None:
                continue
            unmet = rule.unmet(witness.attributes)
            self.expected[layer.name] = unmet is None
            self.witness[layer.name] = next(
                x.name for x in layers if self.found.get(x.name) is witness
            )
            if unmet is not None:
                self.report.not_traced_because[layer.name] = (
                    f"{witness.service} {witness.name} says {unmet}"
                )

    def _effective_parent(self, layer: Layer) -> str | None:
        """The layer this one's span hangs under: its parent, or further out past the
        layers that were not traced."""
        outer = layer.parent
        while outer is not None and self.expected.get(outer) is False:
            outer = self.spec.layer(outer).parent
        return outer

    def _recorded_parent(self, layer: Layer) -> TraceSpan | None:
        """A public layer's span: the one the next layer present recorded as its parent (or
        above it, for a nested layer); without such a layer, the first that holds. None when
        a later layer says it was not traced: a span of it here is someone else's."""
        if self.expected.get(layer.name) is False:
            return None
        candidates = [s for s in self.spans if self.holds(layer, s)]
        for inner in self.spec.message_layers:
            span = self.found.get(inner.name)
            if span is None or self._effective_parent(inner) != layer.name:
                continue
            if inner.name in self.linked_parent:
                return None
            by_id = {s.span_id: s for s in self.spans}
            above = _ancestors(span, by_id) if inner.nested else [span.parent_span_id]
            return next((s for s in candidates if s.span_id in above), None)
        return candidates[0] if candidates else None

    def _leave_out_foreign(self) -> None:
        """Public spans that are neither a public layer's message span nor below one, that
        took the id of a server's span, or that claim a server layer's service: another
        client's word (or this one's about what it cannot speak for), not this message's."""
        chosen = {
            span.span_id
            for layer in self.spec.message_layers
            if layer.public and (span := self.found[layer.name]) is not None
        }
        server_ids = {s.span_id for s in self.spans if not self.public(s)}
        servers = {s for x in self.spec.layers if not x.public for s in x.services}
        by_id = {s.span_id: s for s in self.spans}
        foreign = []
        for span in self.spans:
            if not self.public(span) or span.span_id in chosen:
                continue
            below = any(a in chosen for a in _ancestors(span, by_id))
            if not below or span.span_id in server_ids or span.service in servers:
                foreign.append(span)
        if foreign:
            self.report.foreign = [f"{s.service} {s.name} {s.span_id}" for s in foreign]
            left = {id(s) for s in foreign}
            self.spans = [s for s in self.spans if id(s) not in left]

    def _first_traced(self) -> TraceSpan | None:
        """The message span of the outermost layer recorded, when every layer before it was
        not traced: its parent is the untraced client's span, expected to be absent."""
        for layer in self.spec.message_layers:
            span = self.found[layer.name]
            if span is not None:
                return span
            if self.expected.get(layer.name) is not False:
                return None
        return None

    def links(self) -> None:
        """Each layer's required links, and the layers they prove (a gateway); a link into a
        layer that a later layer says was not there is not required."""
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
            if rule.layer is not None and self.expected.get(rule.layer) is False:
                return
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
        elif self.public(linked):
            problems.append(
                f"{layer.message} links to a span from the public path, not {proven.name}"
            )
        elif linked.service not in proven.services:
            problems.append(f"{layer.message} links to {linked.service}, not {proven.name}")
        else:
            self.report.layers[proven.name] = True

    def states(self) -> None:
        """Each layer present, missing, or not traced by a later layer's word; a missing
        layer breaks the chain unless optional; a chain that only public layers recorded is
        the client's word alone."""
        report, spec = self.report, self.spec
        for layer in spec.layers:
            if report.layers[layer.name]:
                report.layer_states[layer.name] = PRESENT
            elif self.expected.get(layer.name) is False:
                report.layer_states[layer.name] = NOT_TRACED
            else:
                report.layer_states[layer.name] = MISSING
        servers = [x for x in spec.message_layers if not x.public]
        if servers and not any(report.layers[x.name] for x in servers):
            report.client_only = any(report.layers[x.name] for x in spec.message_layers)
            if report.client_only:
                report.problems.clear()
                return
        missing = [
            f"missing layer {layer.name}" + (" (its span was lost)" if self.lost(layer) else "")
            for layer in spec.message_layers
            if report.layer_states[layer.name] == MISSING and not layer.optional
        ]
        report.problems[:0] = missing

    def _hop_into(self, layer: Layer) -> str:
        """The hop a missing layer breaks: from its parent; for the outermost, a lost span
        breaks the hop to the layer that recorded it."""
        if layer.parent:
            return f"{layer.parent} -> {layer.name}"
        if self.lost(layer):
            return f"{layer.name} -> {self.witness[layer.name]}"
        return layer.name

    def lost(self, layer: Layer) -> bool:
        """Missing although a later layer recorded that it was there."""
        return self.expected.get(layer.name) is True and not self.report.layers[layer.name]

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

    def stream_stats(self) -> None:
        """Each layer's stream stats from its message span (a public one's marked as the
        client's word), and the hop that held the tokens."""
        for layer in self.spec.message_layers:
            span = self.found.get(layer.name)
            if span is None:
                continue
            public = layer.public or self.public(span)
            stream = LayerStream.from_attributes(span.attributes, public=public)
            if stream is not None:
                self.report.streams[layer.name] = stream
        self.report.judge_stall()

    def verdict(self) -> None:
        """Where the chain broke: the hop into the outermost missing layer (one a later layer
        confirmed first; a layer proven by a link sits between the linking layer and its
        parent); else, for a whole chain whose message failed, the layer of the deepest error
        span, the one no other error explains."""
        spec, report = self.spec, self.report
        if report.client_only:
            return
        # First the layers known to be expected; then those nobody could confirm (their
        # witness is missing too), which may well not have been there.
        for unconfirmed in (False, True):
            for layer in spec.message_layers:
                confirmed = layer.expected_when is None or layer.name in self.expected
                if (
                    report.layer_states[layer.name] == MISSING
                    and not layer.optional
                    and (confirmed or unconfirmed)
                ):
                    report.hop = self._hop_into(layer)
                    report.cause = (
                        f"{layer.name} span lost"
                        if self.lost(layer)
                        else f"no {layer.message} span from {'/'.join(layer.services)}"
                    )
                    return
                for rule in layer.links:
                    if rule.layer and report.layer_states[rule.layer] == MISSING:
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
    chain.states()
    chain.latencies()
    chain.verdict()
    chain.stream_stats()
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
        # Only the client's span so far is not broken, but not the chain yet either.
        if report.whole or time.monotonic() >= deadline:
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
