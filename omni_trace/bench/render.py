"""The on/off bench's report as a table: on, off and on/off side by side, then the stack as
`up` runs it, the span costs, the spans, the targets and, for a missed p99, where the
slowest messages waited."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from omni_trace.bench import span_costs
from omni_trace.bench.load import HOP_PATHS
from omni_trace.bench.report import BenchReport, Burst, History, Hops, RunReport
from omni_trace.bench.stats import PERCENTILES, fmt, ratio
from omni_trace.bench.targets import Target, targets

Row = tuple[str, Any, Any, Any]  # label, on, off, on/off
T = TypeVar("T")


def _of(value: T | None, get: Callable[[T], Any]) -> Any:
    return None if value is None else get(value)


def _entry(get: Callable[[T], Mapping[str, Any]], key: str) -> Callable[[T], Any]:
    """A getter of one entry of a mapping that `get` reads."""
    return lambda value: get(value).get(key)


class _Table:
    """Rows of a measure read the same way from the on and the off report."""

    def __init__(self, report: BenchReport) -> None:
        self.report = report
        self.rows: list[Row] = []

    def row(
        self,
        label: str,
        get: Callable[[RunReport], Any],
        ratio_name: str | None = None,
        computed: bool = False,
    ) -> None:
        """`ratio_name`: the on/off column from the report's ratios; else, if `computed`,
        on / off of this row."""
        a, b = get(self.report.on), get(self.report.off)
        if ratio_name:
            on_off = self.report.ratios.get(ratio_name)
        else:
            on_off = ratio(a, b) if computed else None
        self.rows.append((label, a, b, on_off))

    def burst(self, label: str, key: str, get: Callable[[Burst], Any], **kw: Any) -> None:
        self.row(label, lambda run: _of(run.bursts.get(key), get), **kw)

    def hops(self, label: str, get: Callable[[Hops], Any]) -> None:
        self.row(label, lambda run: _of(run.hops, get))

    def history(self, label: str, get: Callable[[History], Any]) -> None:
        self.row(label, lambda run: _of(run.history, get))


def _percentile(measure: str, name: str) -> Callable[[Burst], Any]:
    return lambda burst: burst.percentiles(measure).get(name)


def _burst_rows(table: _Table, key: str) -> None:
    name = f"burst {table.report.config.burst} in {key}"
    table.burst(f"{name}: messages lost", key, lambda b: b.lost)
    table.burst(f"{name}: cores busy, stack and clients (%)", key, lambda b: b.cores_busy_pct)
    table.burst(
        f"{name}: CPU per connection and message (ms)",
        key,
        lambda b: b.cpu_ms_per_connection,
        computed=True,
    )
    table.burst(
        f"{name}: connections per s the cores serve", key, lambda b: b.capacity_per_s, computed=True
    )
    for measure, what in (("ttft", "time to first token"), ("latency", "message latency")):
        for p in PERCENTILES:
            ratio_name = f"burst_{key}_{measure}_{p}"
            computed = ratio_name not in table.report.ratios
            table.burst(
                f"{name}: {what} {p} (ms)",
                key,
                _percentile(measure, p),
                ratio_name=None if computed else ratio_name,
                computed=computed,
            )


def _steady_rows(table: _Table) -> None:
    table.row("steady: turns per second", lambda run: run.steady.turns_per_s, "steady_turns_per_s")
    table.row(
        "steady: CPU per turn, all processes (ms)",
        lambda run: run.steady.cpu_ms_per_turn,
        "steady_cpu_per_turn",
    )
    table.row("steady: messages lost", lambda run: run.steady.lost)
    for name in sorted(table.report.on.steady.cpu_ms_per_turn_by_process):
        table.row(
            f"  CPU per turn: {name} (ms)",
            _entry(lambda run: run.steady.cpu_ms_per_turn_by_process, name),
            None,
            True,
        )
    first = next(iter(table.report.on.bursts), "")
    for name in ("dashboard", "omni2"):
        table.burst(
            f"memory per held connection: {name} (KiB)",
            first,
            _entry(lambda b: b.held_kb_per_connection, name),
        )


def _hop_and_history_rows(table: _Table) -> None:
    for path in HOP_PATHS:
        table.hops(
            f"round trip via {path} p50 (ms)", _entry(lambda h: h.message_round_trip_ms, path)
        )
    for path in HOP_PATHS:
        table.hops(f"handshake via {path} p50 (ms)", _entry(lambda h: h.handshake_ms, path))
    table.hops("dashboard hop / Traefik hop (message)", lambda h: h.dashboard_over_traefik.message)
    table.hops(
        "dashboard hop / Traefik hop (handshake)", lambda h: h.dashboard_over_traefik.handshake
    )
    table.history(
        "OMNI2 CPU per turn, fresh database (ms)", lambda h: h.omni2_cpu_ms_per_turn_fresh_database
    )
    table.history(
        "OMNI2 CPU per turn, user without history (ms)", lambda h: h.omni2_cpu_ms_per_turn_fresh
    )
    table.history(
        "OMNI2 CPU per turn, user with long history (ms)",
        lambda h: h.omni2_cpu_ms_per_turn_long_history,
    )
    table.history("long history / without", lambda h: h.long_over_fresh)


def _table(report: BenchReport) -> list[str]:
    table = _Table(report)
    table.row("warm stack start (s)", lambda run: run.start_s)
    for key in report.on.bursts:
        _burst_rows(table, key)
    _steady_rows(table)
    _hop_and_history_rows(table)
    width = max(len(label) for label, *_ in table.rows)
    rounds = report.config.rounds
    lines = ["", "omni-trace bench: tracing on vs off, the stacks side by side in this run"]
    lines.append(
        f"({rounds} round{'s' if rounds > 1 else ''}; bursts' percentiles from every sample of "
        "every round; other numbers and steady ratios the rounds' medians, counts totals)"
    )
    lines += ["", f"{'':<{width}}  {'on':>10}  {'off':>10}  {'on/off':>7}"]
    for label, a, b, on_off in table.rows:
        lines.append(f"{label:<{width}}  {fmt(a):>10}  {fmt(b):>10}  {fmt(on_off, 2):>7}")
    return lines


def render(report: BenchReport) -> str:
    lines = _table(report)
    lines += [
        "",
        *_render_up(report.up),
        *_render_span_costs(report),
        *_render_spans(report.on, report.off),
        "",
    ]
    found = targets(report)
    lines += [_render_target(target) for target in found]
    lines += _render_slowest(report.on, {t.label for t in found if not t.met})
    return "\n".join(lines)


def _render_target(target: Target) -> str:
    between = f" (rounds {target.rounds[0]:.2f}..{target.rounds[1]:.2f})" if target.rounds else ""
    verdict = "met" if target.met else "NOT met"
    figure = f"{fmt(target.value, 3)}{between} {verdict}"
    return f"target {target.label} {target.op} {target.limit:g}: {figure}"


def _render_up(up: RunReport | None) -> list[str]:
    if up is None:
        return []
    steady = up.steady
    by_process = ", ".join(
        f"{name} {ms:.2f}" for name, ms in steady.cpu_ms_per_turn_by_process.items() if ms
    )
    judging = steady.flowview_judging
    own = (
        f"; by its own count {judging.cpu_ms_per_message:.2f} ms per message for "
        f"{judging.judged} judged"
        if judging
        else ""
    )
    return [
        "as omni-trace up runs it (tracing on, the flow view and Prometheus too): "
        f"CPU per turn {fmt(steady.cpu_ms_per_turn, 2)} ms ({by_process}); "
        f"{fmt(steady.turns_per_s)} turns per second",
        f"  (every process from the start of its load until the flow view had judged it{own})",
    ]


def _render_span_costs(report: BenchReport) -> list[str]:
    costs = report.span_costs_us
    if costs is None:
        return []
    spans = span_costs.SPANS_PER_MESSAGE
    return [
        f"a traced message's {spans} spans in OMNI2's shape, CPU in this process "
        f"(us per message): SDK spans {costs.sdk_spans:.0f}, sampler and processors "
        f"{costs.sampler_and_processors:.0f}, encoding with redaction "
        f"{costs.encoding:.0f}; {costs.total:.0f} in all (the API alone, without the "
        f"SDK: {costs.api_without_sdk:.0f})",
        *(
            [
                f"OMNI2's metrics for an answer of {span_costs.CHUNKS} chunks, CPU in this "
                f"process (us per message, traced or not): through the SDK's histograms "
                f"{costs.metrics_sdk_histograms:.0f}, through the in-process ones it uses "
                f"{costs.metrics_local_histograms:.0f}"
            ]
            if costs.metrics_sdk_histograms
            else []
        ),
    ]


def _render_spans(on: RunReport, off: RunReport) -> list[str]:
    lines = []
    for kind, spans in on.spans.items():
        services = ", ".join(f"{k} {v}" for k, v in spans.by_service.items())
        lines.append(
            f"spans per {kind.replace('_', '-')} message: {spans.total} ({services}); "
            f"queryable {spans.queryable_after_done_ms:.0f} ms after done"
        )
    for key, burst in on.bursts.items():
        chains = burst.chains
        if chains:
            lines.append(
                f"burst in {key}: chains whole in Jaeger: {chains.whole} of {chains.checked} "
                "sampled"
            )
            lines += [f"  broken: {b}" for b in chains.broken]
    lines.append(f"services exporting with tracing off: {', '.join(off.exported_by) or 'none'}")
    return lines


def _render_slowest(on: RunReport, missed: set[str]) -> list[str]:
    """For a burst whose p99 target was missed: where its slowest messages waited."""
    lines = []
    for key, burst in on.bursts.items():
        if not any(label.startswith(f"burst_{key}_") and "p99" in label for label in missed):
            continue
        lines += [
            "",
            f"where the slowest messages of the burst in {key} waited "
            "(tracing on; each span's start from the first, and its length):",
        ]
        for timeline in burst.slowest or ():
            lines.append(
                f"  trace {timeline.trace_id}: latency {timeline.latency_ms:.1f} ms, "
                f"first token {timeline.ttft_ms:.1f} ms"
            )
            for offset, duration, service, name in timeline.spans:
                lines.append(f"    +{offset:8.2f} ms {duration:8.2f} ms  {service} {name}")
    return lines
