"""The targets of docs/performance.md, read from a report."""

from __future__ import annotations

from omni_trace.bench.report import BenchReport
from omni_trace.bench.targets import targets


def test_targets_hold_a_tighter_burst_to_the_looser_p99_limit() -> None:
    bursts = {"10s": {"spread_s": 10.0}, "5s": {"spread_s": 5.0}}
    report = {
        "on": {"bursts": bursts, "steady": {"cpu_ms_per_turn": 4.4}},
        "off": {"steady": {"cpu_ms_per_turn": 4.0}},
        "ratios": {"burst_10s_ttft_p99": 1.3, "burst_5s_ttft_p99": 1.3},
    }
    found = {t.label: t for t in targets(BenchReport.from_dict(report))}
    assert not found["burst_10s_ttft_p99"].met and found["burst_10s_ttft_p99"].limit == 1.25
    assert found["burst_5s_ttft_p99"].met and found["burst_5s_ttft_p99"].limit == 1.5
    cost = found["tracing cost per turn (ms)"]
    assert cost.value is not None and round(cost.value, 3) == 0.4 and cost.met
