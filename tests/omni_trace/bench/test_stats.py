"""The numbers both benches share: percentiles and the rounds' merge."""

from __future__ import annotations

from omni_trace.bench.stats import fmt, merge_runs, ratio
from omni_trace.traces.stats import percentile


def test_percentiles_interpolate() -> None:
    assert percentile([], 50) is None
    assert percentile([3.0], 99) == 3.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile(list(map(float, range(101))), 99) == 99.0


def test_rounds_merge_into_totals_and_medians() -> None:
    rounds = [
        {"tracing": True, "steady": {"lost": 0, "seconds": 10.0, "by_block": [1.0]}},
        {"tracing": True, "steady": {"lost": 2, "seconds": 30.0, "by_block": [3.0]}},
        {"tracing": True, "steady": {"lost": 1, "seconds": 20.0, "by_block": [2.0]}},
    ]
    rounds[0]["errors"], rounds[1]["errors"] = ["a"], ["a", "b"]
    merged = merge_runs(rounds)
    assert merged == {
        "tracing": True,
        "steady": {"lost": 3, "seconds": 20.0, "by_block": [1.0, 3.0, 2.0]},
        "errors": ["a", "b"],
    }


def test_a_ratio_needs_both_figures_and_a_positive_divisor() -> None:
    assert ratio(3.0, 2.0) == 1.5
    assert ratio(None, 2.0) is None and ratio(3.0, None) is None and ratio(3.0, 0.0) is None


def test_cells_print_unknowns_as_a_dash_and_group_thousands_when_asked() -> None:
    assert fmt(None) == "-"
    assert fmt(3) == "3"
    assert fmt(1234.56) == "1234.6"
    assert fmt(1234.56, 2, grouped=True) == "1,234.56"
