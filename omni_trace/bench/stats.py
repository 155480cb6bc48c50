"""Numbers of both benches in one place: percentiles (the toolkit's), ratios, the rounds'
merge and the table cells."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from omni_trace.traces.stats import percentile

PERCENTILES = {"p50": 50.0, "p95": 95.0, "p99": 99.0, "p999": 99.9}

# Counts add up over rounds; every other number is the rounds' median.
_SUMMED = frozenset({"lost", "answered", "turns", "checked", "whole", "connections"})


def percentiles_ms(ms: Sequence[float]) -> dict[str, float | None]:
    """p50, p95, p99 and p99.9 of milliseconds."""
    return {name: percentile(ms, q) for name, q in PERCENTILES.items()}


def seconds_as_ms(seconds: Sequence[float]) -> dict[str, float | None]:
    """p50, p95, p99 and p99.9 of seconds, in milliseconds."""
    return percentiles_ms([s * 1000 for s in seconds])


def spread_ms(seconds: Sequence[float]) -> dict[str, float | None]:
    """p50, p99 and the maximum of seconds, in milliseconds."""
    ms = [s * 1000 for s in seconds]
    return {"p50": percentile(ms, 50), "p99": percentile(ms, 99), "max": max(ms) if ms else None}


def ratio(a: float | None, b: float | None) -> float | None:
    """a / b, None where either is unknown or b is not positive."""
    return None if a is None or b is None or b <= 0 else a / b


def difference(a: float | None, b: float | None) -> float | None:
    """a - b, None where either is unknown."""
    return None if a is None or b is None else a - b


def merge_runs(runs: list[Any], key: str = "") -> Any:
    """One report from the rounds' reports of one kind, as JSON trees (tracing on, or off):
    counts summed, other numbers the rounds' median, names united, samples and timelines put
    together."""
    first = runs[0]
    if isinstance(first, dict):
        keys = dict.fromkeys(k for run in runs for k in run)
        return {k: merge_runs([run[k] for run in runs if k in run], k) for k in keys}
    if isinstance(first, list):
        items = [item for run in runs for item in run]
        return list(dict.fromkeys(items)) if all(isinstance(i, str) for i in items) else items
    if isinstance(first, bool) or not isinstance(first, int | float):
        return first
    numbers = [v for v in runs if isinstance(v, int | float)]
    return sum(numbers) if key in _SUMMED else percentile(numbers, 50)


def fmt(value: Any, digits: int = 1, *, grouped: bool = False) -> str:
    """A table cell: "-" for unknown, floats to `digits` (with thousands separators if
    `grouped`), anything else as it prints."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}" if grouped else f"{value:.{digits}f}"
    return str(value)
