"""The scale bench's report as frozen dataclasses, its JSON (`to_dict()`: the keys and shape
`--json` prints) and its table."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from omni_trace.bench.config import ScaleConfig
from omni_trace.bench.json_tree import Tree, pick, strings
from omni_trace.bench.report import Distribution, Steady
from omni_trace.bench.stats import fmt, ratio


@dataclass(frozen=True)
class StackParts:
    """What was measured: a stack's parts as it started them."""

    start_s: float | None
    trace_pipeline: str
    database: str
    omni2_replicas: int
    dashboard_replicas: int


@dataclass(frozen=True)
class ChainVerdicts:
    """The burst's answered messages' chains, read back from Jaeger."""

    answered: int
    in_jaeger: int
    whole: int
    failed_but_whole: int
    broken: tuple[str, ...] = ()


@dataclass(frozen=True)
class ScaleBurst:
    """The on/off bench's burst through the scale profile, and every answered chain."""

    sent: int
    spread_s: float
    answered: int
    lost: int
    errors: tuple[str, ...]
    ttft_ms: Distribution
    latency_ms: Distribution
    cores_busy_pct: float | None
    cpu_ms_per_connection: float | None
    capacity_per_s: float | None
    peak_rss_mb: Mapping[str, float]
    traces: ChainVerdicts
    zero_lost: bool

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ScaleBurst:
        return pick(
            cls, data, errors=strings, traces=lambda v: pick(ChainVerdicts, v, broken=strings)
        )


@dataclass(frozen=True)
class Throughput:
    """The same steady load with 1 and with 2 OMNI2 replicas, the rounds merged."""

    omni2_1: Steady
    omni2_2: Steady
    turns_per_s_2_over_1: float | None  # the median of the rounds' ratios
    ratio_by_round: tuple[float | None, ...] = ()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Throughput:
        return pick(
            cls,
            data,
            omni2_1=Steady.from_dict,
            omni2_2=Steady.from_dict,
            ratio_by_round=tuple,
        )


@dataclass(frozen=True)
class Queryable:
    """Messages followed from `done` until their chain was whole in Jaeger."""

    samples: int
    unanswered: int
    whole: int
    late: int  # answered, not whole within the sample timeout
    message_spans_ms: Distribution = field(default_factory=dict)  # p50, p99, max
    whole_chain_ms: Distribution = field(default_factory=dict)


@dataclass(frozen=True)
class ScaleReport(Tree):
    config: ScaleConfig
    stacks: Mapping[str, StackParts]  # small, scale_1_omni2, scale_2_omni2
    burst: ScaleBurst
    throughput: Throughput
    queryable: Mapping[str, Queryable]  # small, kafka
    zero_lost: bool

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, default=str)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ScaleReport:
        return pick(
            cls,
            data,
            config=lambda v: pick(ScaleConfig, v),
            stacks=lambda v: {k: pick(StackParts, s) for k, s in v.items()},
            burst=ScaleBurst.from_dict,
            throughput=Throughput.from_dict,
            queryable=lambda v: {k: pick(Queryable, q) for k, q in v.items()},
        )


# -- the table ------------------------------------------------------------------------------


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    """Rows of a label and one value per column; a ratio column (its header has a "/")
    gets two decimals."""
    width = max(len(str(row[0])) for row in rows)
    digits = [2 if "/" in h else 1 for h in header]
    out = [f"{'':<{width}}" + "".join(f"  {h:>14}" for h in header)]
    for label, *values in rows:
        cells = (fmt(v, d, grouped=True) for v, d in zip(values, digits, strict=True))
        out.append(f"{label:<{width}}" + "".join(f"  {c:>14}" for c in cells))
    return out


def _render_burst(report: ScaleReport) -> list[str]:
    cfg, burst = report.config, report.burst
    traces = burst.traces
    return [
        f"burst through the scale profile: {burst.sent} connections within "
        f"{cfg.burst_spread_s:g} s, one message each, held until all were answered",
        f"  sent {burst.sent}, answered {burst.answered}, lost {burst.lost}"
        + (f" ({'; '.join(burst.errors)})" if burst.errors else ""),
        f"  time to first token p50 / p99: {_ms(burst.ttft_ms, 'p50')} / "
        f"{_ms(burst.ttft_ms, 'p99')} ms; message latency p50 / p99: "
        f"{_ms(burst.latency_ms, 'p50')} / {_ms(burst.latency_ms, 'p99')} ms",
        f"  cores busy (the stack and the bench's clients): "
        f"{fmt(burst.cores_busy_pct, grouped=True)}%",
        f"  traces in Jaeger through Kafka: {traces.in_jaeger} of {traces.answered} "
        f"answered; chains whole: {traces.whole} of {traces.answered}",
        *(f"    broken: {b}" for b in traces.broken),
        f"  0 lost: {'yes' if burst.zero_lost else 'NO'} (every message answered, every "
        "answered message's trace queryable and whole)",
    ]


def _ms(distribution: Distribution, name: str) -> str:
    return fmt(distribution[name], grouped=True)


def _render_throughput(report: ScaleReport) -> list[str]:
    cfg, throughput = report.config, report.throughput
    one, two = throughput.omni2_1, throughput.omni2_2

    def row(label: str, a: Any, b: Any, with_ratio: bool = True) -> list[Any]:
        return [label, a, b, ratio(b, a) if with_ratio else None]

    rows = [
        ["turns per second", one.turns_per_s, two.turns_per_s, throughput.turns_per_s_2_over_1],
        row("message latency p50 (ms)", one.latency_ms["p50"], two.latency_ms["p50"]),
        row("message latency p99 (ms)", one.latency_ms["p99"], two.latency_ms["p99"]),
        row("CPU per turn, stack processes (ms)", one.cpu_ms_per_turn, two.cpu_ms_per_turn),
    ]
    by_one, by_two = one.cpu_ms_per_turn_by_process, two.cpu_ms_per_turn_by_process
    for name in sorted(set(by_one) | set(by_two)):
        rows.append(row(f"  {name}", by_one.get(name), by_two.get(name), with_ratio=False))
    rows.append(row("messages lost", one.lost, two.lost, with_ratio=False))
    lines = [
        f"chats per second: {cfg.clients} clients x {cfg.messages} messages, "
        "scale profile with 1 then 2 OMNI2 replicas",
        *_table(["1 OMNI2", "2 OMNI2", "2/1"], rows),
    ]
    if cfg.rounds > 1:
        by_round = ", ".join(fmt(r, 2, grouped=True) for r in throughput.ratio_by_round)
        lines += [
            f"({cfg.rounds} rounds, each a stack with 1 and a stack with 2 OMNI2 in "
            "alternating order: counts are totals, other numbers medians;",
            f" turns per second 2/1 is the median of the rounds' ratios: {by_round})",
        ]
    return lines


def _render_queryable(report: ScaleReport) -> list[str]:
    cfg = report.config
    small, kafka = report.queryable["small"], report.queryable["kafka"]
    rows: list[list[Any]] = []
    for label, small_ms, kafka_ms in (
        ("message spans", small.message_spans_ms, kafka.message_spans_ms),
        ("whole chain", small.whole_chain_ms, kafka.whole_chain_ms),
    ):
        for stat in ("p50", "p99", "max"):
            rows.append([f"{label} {stat} (ms)", small_ms[stat], kafka_ms[stat]])
    rows.append(["not whole within the timeout", small.late, kafka.late])
    return [
        f"done -> queryable in Jaeger: {cfg.samples} messages, one every "
        f"{cfg.sample_every_s:g} s, Jaeger polled every {cfg.poll_interval_s * 1000:.0f} ms",
        *_table(["small stack", "Kafka pipeline"], rows),
    ]


def render(report: ScaleReport) -> str:
    stacks = "; ".join(
        f"{name} ({s.trace_pipeline} traces, {s.database}, dashboards "
        f"{s.dashboard_replicas}, OMNI2 {s.omni2_replicas}) up in {s.start_s:.1f} s"
        for name, s in report.stacks.items()
    )
    verdict = "0 lost" if report.zero_lost else "messages or chains LOST"
    lines = [
        "",
        "omni-trace bench --scale: the scale-out profile, measured one stack after the other",
        "",
        f"stacks: {stacks}",
        "",
        *_render_burst(report),
        "",
        *_render_throughput(report),
        "",
        *_render_queryable(report),
        "",
        f"verdict: {verdict}",
    ]
    return "\n".join(lines)
