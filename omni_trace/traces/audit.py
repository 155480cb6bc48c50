"""`omni-trace audit`: for a conversation, a user or a time window, is every message's chain
whole? Per-hop latency for each message, and for each broken chain the reason."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime

from omni_trace.traces.chain import NOT_TRACED, ChainReport, analyze_chain
from omni_trace.traces.jaeger import JaegerClient, TraceSpan
from omni_trace.traces.spec import ChainSpec, default_spec

Progress = Callable[[str], None]

# Where a message trace of our stack can be found: each layer's message span (any one may be
# missing). Another stack's: its spec's `message_spans`.
MESSAGE_SPANS = default_spec().message_spans


@dataclass(frozen=True)
class AuditQuery:
    conversation_id: str | None = None
    user_id: str | None = None
    since_s: float = 3600.0
    limit: int = 500

    def tags(self, spec: ChainSpec | None = None) -> dict[str, str]:
        spec = spec or default_spec()
        tags = {}
        if self.conversation_id:
            tags[spec.conversation_attribute] = self.conversation_id
        if self.user_id:
            tags[spec.user_attribute] = self.user_id
        return tags

    def describe(self) -> str:
        parts = [f"conversation {self.conversation_id}"] if self.conversation_id else []
        parts += [f"user {self.user_id}"] if self.user_id else []
        return " and ".join(parts) or f"the last {self.since_s:.0f} s"


def find_message_traces(
    jaeger: JaegerClient, query: AuditQuery, spec: ChainSpec | None = None
) -> list[str]:
    """Trace ids of message traces matching the query, at any layer that recorded them."""
    spec = spec or default_spec()
    services = set(jaeger.services())
    end_us = int(time.time() * 1e6)
    start_us = end_us - int(query.since_s * 1e6)

    def search(layer: tuple[str, str]) -> list[str]:
        service, operation = layer
        return jaeger.find_trace_ids(
            service,
            query.tags(spec),
            operation=operation,
            limit=query.limit,
            start_us=start_us,
            end_us=end_us,
        )

    # A client's span says which conversation and user it is of, but only the client says
    # so: a conversation's or a user's messages are those a server layer recorded.
    public = {s for layer in spec.layers if layer.public for s in layer.services}
    searched = [x for x in spec.message_spans if not (query.tags(spec) and x[0] in public)]
    # Jaeger answers a search with whole traces: a few hundred messages take it a while per
    # layer, so the layers are searched side by side.
    layers = [layer for layer in searched if layer[0] in services]
    with ThreadPoolExecutor(max(len(layers), 1)) as pool:
        found = list(pool.map(search, layers))
    return list(dict.fromkeys(trace_id for ids in found for trace_id in ids))


def find_sampled_out(
    jaeger: JaegerClient, query: AuditQuery, spec: ChainSpec | None = None
) -> list[str]:
    """Conversations a tail sampler dropped, as their session traces say: their messages are
    absent on purpose (all but the failed, refused, slow and broken ones), not broken."""
    spec = spec or default_spec()
    if spec.sample_attribute is None:
        return []
    end_us = int(time.time() * 1e6)
    start_us = end_us - int(query.since_s * 1e6)
    tags = {**query.tags(spec), spec.sample_attribute: "false"}
    services = sorted(set(jaeger.services()) & {s for layer in spec.layers for s in layer.services})
    found: dict[str, None] = {}
    for service in services:
        for trace_id in jaeger.find_trace_ids(
            service, tags, limit=query.limit, start_us=start_us, end_us=end_us
        ):
            for span in jaeger.get_trace(trace_id):
                conversation = span.attributes.get(spec.conversation_attribute)
                if span.attributes.get(spec.sample_attribute) is False and conversation:
                    found[str(conversation)] = None
    return list(found)


def run_audit(
    jaeger: JaegerClient,
    query: AuditQuery,
    progress: Progress = lambda _: None,
    settle_s: float = 10.0,
    spec: ChainSpec | None = None,
) -> list[ChainReport]:
    progress(f"searching Jaeger for messages of {query.describe()} ...")
    trace_ids = find_message_traces(jaeger, query, spec)
    sessions: dict[str, list[TraceSpan]] = {}

    def session(trace_id: str) -> list[TraceSpan]:
        if trace_id not in sessions:
            sessions[trace_id] = jaeger.get_trace(trace_id)
        return sessions[trace_id]

    reports: dict[str, ChainReport] = {}
    for i, trace_id in enumerate(trace_ids, 1):
        progress(f"  checking trace {i}/{len(trace_ids)} {trace_id}")
        reports[trace_id] = analyze_chain(jaeger.get_trace(trace_id), session, spec)
    # Spans reach Jaeger in batches (Traefik's every 5 s): a chain broken only for want of
    # spans from the last few seconds is re-checked until `settle_s` after the message.
    while True:
        recent = [
            r for r in reports.values() if r.broken and time.time() - r.end_ns / 1e9 < settle_s
        ]
        if not recent:
            break
        progress(f"  waiting for late spans of {len(recent)} recent message(s) ...")
        time.sleep(1.0)
        for r in recent:
            for session_id in r.session_trace_ids:
                sessions.pop(session_id, None)
            reports[r.trace_id] = analyze_chain(jaeger.get_trace(r.trace_id), session, spec)
    # Link mode: a client's own trace is a part of the message trace that links to it (never
    # a trace a server recorded: a client may link to any trace it likes).
    linked = {r.client_trace_id for r in reports.values() if r.client_trace_id}
    return sorted(
        (r for r in reports.values() if not (r.trace_id in linked and r.client_only)),
        key=lambda r: r.start_ns,
    )


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


Column = tuple[str, int, Callable[[ChainReport], str]]


def _layer_letter(report: ChainReport, name: str) -> str:
    """Its initial when present, `.` when a later layer says it was not traced, else `-`."""
    if report.layers.get(name):
        return name[0].upper()
    return "." if report.layer_states.get(name) == NOT_TRACED else "-"


def _hop_cell(hop: str) -> Callable[[ChainReport], str]:
    return lambda r: _ms(r.hops.get(hop))


def columns(spec: ChainSpec | None = None) -> list[Column]:
    """The table's columns for a spec: a letter per layer, each hop between layers (`c>d`),
    time to first token at each layer in one column, then model, tools and total."""
    spec = spec or default_spec()
    joined = [h for h in spec.hops if "_to_" in h]
    ttft = [h for h in spec.hops if h.startswith("ttft_")]
    found: list[Column] = [
        ("trace", 12, lambda r: r.trace_id[:12]),
        ("start", 8, lambda r: datetime.fromtimestamp(r.start_ns / 1e9).strftime("%H:%M:%S")),
        ("user", 8, lambda r: (r.user_id or "-")[:8]),
        (
            "layers",
            max(6, len(spec.layers)),
            lambda r: "".join(_layer_letter(r, name) for name in spec.layer_names),
        ),
    ]
    for hop in joined:
        outer, inner = hop.split("_to_")
        found.append((f"{outer[0]}>{inner[0]}", 6, _hop_cell(hop)))
    if ttft:
        initials = "/".join(h.removeprefix("ttft_")[0] for h in ttft)
        found.append(
            (
                f"ttft {initials}",
                6 * len(ttft) - 1,
                lambda r: "/".join(_ms(r.hops.get(h)) for h in ttft),
            )
        )
    found += [
        ("model", 7, _hop_cell("model")),
        ("tools", 6, _hop_cell("tools")),
        ("total", 7, _hop_cell("total")),
        ("stall", 12, _stall_cell),
    ]
    return found


def _stall_cell(report: ChainReport) -> str:
    """The hop that held the tokens: its initial, what it added, when (`d +180@2.3s`)."""
    stall = report.stall
    if stall is None:
        return "-"
    return f"{stall.layer[0]} +{stall.added_ms:.0f}@{stall.at_ms / 1000:.1f}s"


def render_stalls(reports: Iterable[ChainReport]) -> str:
    """One line per message whose stream a hop held (empty when none did)."""
    lines = [f"  {r.trace_id[:12]}  {r.stall.description}" for r in reports if r.stall]
    return "\n".join(["stalled streams:", *lines]) if lines else ""


def render_table(reports: Iterable[ChainReport], spec: ChainSpec | None = None) -> str:
    table = columns(spec)
    header = "  ".join(f"{name:<{width}}" for name, width, _ in table) + "  status"
    lines = [header, "-" * len(header)]
    for r in reports:
        cells = "  ".join(f"{cell(r):<{width}}" for _, width, cell in table)
        lines.append(f"{cells}  {r.status}")
    return "\n".join(lines)


@dataclass(frozen=True)
class Counts:
    """The audit's verdicts, each message counted once: whole (every layer traced), whole
    from the first traced layer (an outer layer, e.g. a client without trace context, not
    traced), broken, whole but failed, and recorded by the client alone."""

    messages: int
    whole: int
    not_traced: int
    broken: int
    failed: int
    client_only: int
    foreign: int  # spans left out as someone else's, over all messages

    @classmethod
    def of(cls, reports: Sequence[ChainReport]) -> Counts:
        broken = [r for r in reports if r.broken]
        rest = [r for r in reports if not r.broken and not r.client_only]
        failed = [r for r in rest if r.errors]
        untraced = [r for r in rest if not r.errors and r.not_traced]
        return cls(
            messages=len(reports),
            whole=len(rest) - len(failed) - len(untraced),
            not_traced=len(untraced),
            broken=len(broken),
            failed=len(failed),
            client_only=sum(r.client_only for r in reports),
            foreign=sum(len(r.foreign) for r in reports),
        )


def summary(reports: list[ChainReport]) -> str:
    counts = Counts.of(reports)
    untraced = sorted({name for r in reports for name in r.not_traced})
    line = f"{counts.messages} message(s): {counts.whole} whole, "
    if counts.not_traced:
        line += (
            f"{counts.not_traced} whole from the first traced layer "
            f"({', '.join(untraced)} not traced), "
        )
    line += f"{counts.broken} broken chain(s), {counts.failed} with error spans"
    if counts.client_only:
        line += f", {counts.client_only} recorded by the client alone"
    if counts.foreign:
        line += f"; {counts.foreign} foreign span(s) left out"
    return line


def flow_view_url(base: str, trace_id: str) -> str:
    """A message's (or session's) page in the flow view at `base`."""
    return f"{base.rstrip('/')}/#/trace/{trace_id}"


def render_links(reports: Iterable[ChainReport], base: str) -> str:
    return "\n".join(
        ["in the flow view:"]
        + [f"  {r.trace_id[:12]}  {flow_view_url(base, r.trace_id)}" for r in reports]
    )


def render_json(
    reports: list[ChainReport],
    flow_view: str | None = None,
    sampled_out: Sequence[str] = (),
) -> str:
    def message(report: ChainReport) -> dict[str, object]:
        found = report.as_dict()
        if flow_view:
            found["flow_view_url"] = flow_view_url(flow_view, report.trace_id)
        return found

    return json.dumps(
        {
            "messages": [message(r) for r in reports],
            # The kept messages (those Jaeger holds) and the conversations a tail sampler
            # dropped, counted apart: a sampled-out message is absent, not broken.
            "kept": len(reports),
            "broken": sum(r.broken for r in reports),
            "errors": sum(bool(r.errors) for r in reports),
            # Whole from the first traced layer (e.g. a client that sent no trace context),
            # recorded by the client alone, and spans left out as someone else's.
            "not_traced": Counts.of(reports).not_traced,
            "client_only": sum(r.client_only for r in reports),
            "foreign_spans": sum(len(r.foreign) for r in reports),
            "sampled_out": len(sampled_out),
            "sampled_out_conversations": list(sampled_out),
        },
        indent=2,
    )


def sampling_note(sampled_out: Sequence[str]) -> str:
    if not sampled_out:
        return ""
    return (
        f"{len(sampled_out)} conversation(s) sampled out by the tail sampler: their session "
        "traces are kept, their messages only when failed, refused, slow or broken; a message "
        "missing from them is not a broken chain"
    )


def exit_code(
    reports: list[ChainReport],
    query: AuditQuery,
    allow_errors: bool,
    sampled_out: Sequence[str] = (),
) -> int:
    asked = query.conversation_id or query.user_id
    if not reports and asked and not sampled_out:
        return 1  # asked about a conversation or user that left no trace at all
    if any(r.broken for r in reports):
        return 1
    if not allow_errors and any(r.errors for r in reports):
        return 1
    return 0
