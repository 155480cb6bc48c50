"""The targets of docs/performance.md, each with a report's figure."""

from __future__ import annotations

from dataclasses import dataclass

from omni_trace.bench.report import BenchReport
from omni_trace.bench.stats import difference

# Cost per turn must not grow with stored history (tracing on, long history / fresh).
HISTORY_GROWTH_LIMIT = 1.1

# The p99 limits of a burst: two cores are close to busy when it is sent within 5 s.
P99_LIMIT = 1.25
P99_LIMIT_TIGHT, TIGHT_S = 1.5, 5.0
TRACING_COST_LIMIT_MS = 0.6  # CPU per traced turn minus CPU per untraced turn
CPU_PER_TURN_LIMIT_MS = 5.0  # with tracing on, every process of the stack


@dataclass(frozen=True)
class Target:
    label: str
    value: float | None
    op: str  # "<=" or ">="
    limit: float
    rounds: tuple[float, float] | None = None  # the rounds' range of a ratio

    @property
    def met(self) -> bool:
        if self.value is None:
            return False
        return self.value <= self.limit if self.op == "<=" else self.value >= self.limit


def targets(report: BenchReport) -> list[Target]:
    """Every target of docs/performance.md with this report's figure."""
    r, spread = report.ratios, report.ratio_range

    def ratio(name: str, op: str, limit: float) -> Target:
        return Target(name, r.get(name), op, limit, spread.get(name))

    found = []
    for key, burst in report.on.bursts.items():
        tight = burst.spread_s <= TIGHT_S
        for measure in ("ttft", "latency"):
            found.append(ratio(f"burst_{key}_{measure}_p50", "<=", 1.25))
            found.append(
                ratio(f"burst_{key}_{measure}_p99", "<=", P99_LIMIT_TIGHT if tight else P99_LIMIT)
            )
    found += [
        ratio("steady_turns_per_s", ">=", 0.95),
        ratio("steady_cpu_per_turn", "<=", 1.10),
        Target("tracing cost per turn (ms)", tracing_cost_ms(report), "<=", TRACING_COST_LIMIT_MS),
        Target(
            "CPU per turn, tracing on (ms)",
            report.on.steady.cpu_ms_per_turn,
            "<=",
            CPU_PER_TURN_LIMIT_MS,
        ),
    ]
    if report.up is not None:
        found.append(
            Target(
                "CPU per turn, as omni-trace up (ms)",
                report.up.steady.cpu_ms_per_turn,
                "<=",
                CPU_PER_TURN_LIMIT_MS,
            )
        )
    history = report.on.history
    found.append(
        Target(
            "OMNI2 CPU per turn, long history / fresh",
            history.long_over_fresh if history else None,
            "<=",
            HISTORY_GROWTH_LIMIT,
        )
    )
    return found


def tracing_cost_ms(report: BenchReport) -> float | None:
    """CPU per traced turn minus CPU per untraced turn, all processes (rounds' medians)."""
    return difference(report.on.steady.cpu_ms_per_turn, report.off.steady.cpu_ms_per_turn)
