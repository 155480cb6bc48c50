"""The on/off bench's report as frozen dataclasses: a run's report (one stack of a round, or
the rounds merged), its bursts, steady phase, hops, history and spans, and the whole run's.

`to_dict()` gives the JSON `--json` prints (its keys and shape are what users and tests
read); `from_dict()` reads it back, from a run or a stored report. The rounds merge as JSON
trees (`stats.merge_runs`): a count adds up and any other number is the median, whatever
the measure."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple

from omni_trace.bench.config import BenchConfig
from omni_trace.bench.json_tree import ABSENT, EMPTY, Tree, maybe, pick, strings
from omni_trace.bench.span_costs import SpanCosts

# Percentiles by name (p50, p95, p99, p999; or p50, p99, max), in milliseconds.
Distribution = Mapping[str, float | None]

# -- a burst --------------------------------------------------------------------------------


class SpanAt(NamedTuple):
    """A span of a slow message's trace (an array in the JSON)."""

    offset_ms: float  # its start, from the trace's first span
    duration_ms: float
    service: str
    name: str


@dataclass(frozen=True)
class Timeline:
    """Where one of a burst's slowest messages waited."""

    trace_id: str
    latency_ms: float
    ttft_ms: float
    spans: tuple[SpanAt, ...] = ()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Timeline:
        return pick(cls, data, spans=lambda v: tuple(SpanAt(*s) for s in v))


@dataclass(frozen=True)
class Chains:
    """The sampled chains of a burst, checked in Jaeger."""

    checked: int
    whole: int
    broken: tuple[str, ...] = ()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Chains:
        return pick(cls, data, broken=strings)


@dataclass(frozen=True)
class BurstSamples:
    """Every sample of a burst, so that rounds pool into one distribution."""

    ttft: tuple[float, ...] = ()
    latency: tuple[float, ...] = ()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BurstSamples:
        return pick(cls, data, ttft=tuple, latency=tuple)


@dataclass(frozen=True)
class Burst:
    """K connections opened within `spread_s`, one message each."""

    spread_s: float
    connections: int = 0
    answered: int = 0
    lost: int = 0
    errors: tuple[str, ...] = ()
    ttft_ms: Distribution = field(default_factory=dict)
    latency_ms: Distribution = field(default_factory=dict)
    samples_ms: BurstSamples = BurstSamples()
    cores_busy_pct: float | None = None
    cpu_ms_per_connection: float | None = None
    capacity_per_s: float | None = None  # connections per second the cores could serve
    peak_rss_mb: Mapping[str, float] = field(default_factory=dict)
    held_kb_per_connection: Mapping[str, float] = field(default_factory=dict)
    chains: Chains | None = field(default=None, metadata=ABSENT)  # tracing on
    slowest: tuple[Timeline, ...] | None = field(default=None, metadata=ABSENT)  # tracing on

    def percentiles(self, measure: str) -> Distribution:
        """Time to first token ("ttft") or message latency ("latency")."""
        return self.ttft_ms if measure == "ttft" else self.latency_ms

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Burst:
        return pick(
            cls,
            data,
            errors=strings,
            samples_ms=BurstSamples.from_dict,
            chains=Chains.from_dict,
            slowest=lambda v: tuple(Timeline.from_dict(t) for t in v),
        )


# -- the steady load, hops, history, spans ---------------------------------------------------


@dataclass(frozen=True)
class Judging:
    """The flow view's own count of its judging (its /metrics)."""

    judged: int
    cpu_ms_per_message: float


@dataclass(frozen=True)
class Steady(Tree):
    """C clients on open connections, M messages each."""

    turns: int = 0
    lost: int = 0
    seconds: float = 0.0
    turns_per_s: float | None = None
    cpu_ms_per_turn: float | None = None  # all processes of the stack
    cpu_ms_per_turn_by_process: Mapping[str, float] = field(default_factory=dict)
    latency_ms: Distribution = field(default_factory=dict)
    # The on/off bench's blocks, alternating between the stacks.
    cpu_ms_per_turn_by_block: tuple[float, ...] | None = field(default=None, metadata=ABSENT)
    # As `omni-trace up` runs it.
    flowview_judging: Judging | None = field(default=None, metadata=ABSENT)
    # The scale bench's rounds merged.
    turns_per_s_by_round: tuple[float | None, ...] | None = field(default=None, metadata=ABSENT)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Steady:
        return pick(
            cls,
            data,
            cpu_ms_per_turn_by_block=tuple,
            flowview_judging=lambda v: pick(Judging, v),
            turns_per_s_by_round=tuple,
        )


@dataclass(frozen=True)
class HopRatios:
    message: float | None = None
    handshake: float | None = None


@dataclass(frozen=True)
class Hops:
    """p50 round trip and handshake through each entry (dashboard, traefik, omni2), and the
    hops between them."""

    message_round_trip_ms: Mapping[str, float | None] = field(default_factory=dict)
    handshake_ms: Mapping[str, float | None] = field(default_factory=dict)
    message_hop_ms: Mapping[str, float | None] = field(default_factory=dict)
    handshake_hop_ms: Mapping[str, float | None] = field(default_factory=dict)
    dashboard_over_traefik: HopRatios = HopRatios()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Hops:
        return pick(cls, data, dashboard_over_traefik=lambda v: pick(HopRatios, v))


@dataclass(frozen=True)
class History:
    """OMNI2's CPU per turn: fresh database, a user without history, one with a long one."""

    stored_messages: int = 0
    omni2_cpu_ms_per_turn_fresh_database: float | None = None
    omni2_cpu_ms_per_turn_fresh: float | None = None
    omni2_cpu_ms_per_turn_long_history: float | None = None
    long_over_fresh: float | None = None


@dataclass(frozen=True)
class SpanCount:
    """The spans of one message by service, and when Jaeger had its turn."""

    total: int
    by_service: Mapping[str, int]
    queryable_after_done_ms: float


# -- a run, a round, the whole bench ---------------------------------------------------------


@dataclass(frozen=True)
class RunReport(Tree):
    """One stack's measures in a round (tracing on, off, or as `up` runs it), or the
    rounds' merged."""

    tracing: bool
    mode: str = "on"
    start_s: float = 0.0
    bursts: Mapping[str, Burst] = field(default_factory=dict)  # by spread: "10s", "5s"
    steady: Steady = Steady()
    hops: Hops | None = field(default=None, metadata=EMPTY)
    history: History | None = field(default=None, metadata=EMPTY)
    spans: Mapping[str, SpanCount] = field(default_factory=dict)  # tool_free, tool_calling
    exported_by: tuple[str, ...] = ()  # services Jaeger heard from

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunReport:
        return pick(
            cls,
            {"tracing": True, **data},
            bursts=lambda v: {k: Burst.from_dict(b) for k, b in v.items()},
            steady=Steady.from_dict,
            hops=maybe(Hops.from_dict),
            history=maybe(lambda v: pick(History, v)),
            spans=lambda v: {k: pick(SpanCount, s) for k, s in v.items()},
            exported_by=strings,
        )


def spread_key(spread_s: float) -> str:
    return f"{spread_s:g}s"


Ratios = Mapping[str, float | None]


@dataclass(frozen=True)
class Round:
    """One round's stacks (on, off, up) and its ratios of on / off."""

    runs: Mapping[str, RunReport]
    ratios: Ratios

    def to_dict(self) -> dict[str, Any]:
        return {**{name: run.to_dict() for name, run in self.runs.items()}, "ratios": self.ratios}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Round:
        runs = {k: RunReport.from_dict(v) for k, v in data.items() if k != "ratios"}
        return cls(runs, data.get("ratios", {}))


@dataclass(frozen=True)
class BenchReport:
    """The whole run: the rounds merged (bursts pooled, steady ratios the rounds' medians),
    and each round."""

    config: BenchConfig
    runs: Mapping[str, RunReport]  # on, off and (unless left out) up
    ratios: Ratios
    ratio_range: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    rounds: tuple[Round, ...] = ()
    span_costs_us: SpanCosts | None = None

    @property
    def on(self) -> RunReport:
        return self.runs["on"]

    @property
    def off(self) -> RunReport:
        return self.runs["off"]

    @property
    def up(self) -> RunReport | None:
        return self.runs.get("up")

    @property
    def lost(self) -> int:
        """Messages lost in every burst and steady load of the merged runs."""
        bursts = sum(b.lost for run in self.runs.values() for b in run.bursts.values())
        return bursts + sum(run.steady.lost for run in self.runs.values())

    def to_dict(self) -> dict[str, Any]:
        costs = self.span_costs_us
        return {
            "config": asdict(self.config),
            **({"span_costs_us": {**asdict(costs), "total": costs.total}} if costs else {}),
            **{name: run.to_dict() for name, run in self.runs.items()},
            "ratios": dict(self.ratios),
            "ratio_range": {name: list(r) for name, r in self.ratio_range.items()},
            "rounds": [r.to_dict() for r in self.rounds],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, default=str)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BenchReport:
        costs = data.get("span_costs_us")
        return cls(
            config=pick(BenchConfig, data.get("config", {})),
            runs={k: RunReport.from_dict(data[k]) for k in ("on", "off", "up") if k in data},
            ratios=data.get("ratios", {}),
            ratio_range={k: (v[0], v[1]) for k, v in data.get("ratio_range", {}).items()},
            rounds=tuple(Round.from_dict(r) for r in data.get("rounds", [])),
            span_costs_us=pick(SpanCosts, costs) if costs else None,
        )
