"""A latency gate per hop: `omni-trace audit --save-baseline FILE` stores a run's hop
percentiles; `--baseline FILE` compares a later run with them and fails on a regression.

A hop regressed when its p50 or p95 grew past the tolerance relative to the baseline AND by
more than an absolute floor (so a 0.1 ms hop that takes 0.2 ms does not fail a build). A hop
that either side did not measure is not compared. The hops are the chain reports' `hops`.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omni_trace.errors import CliError
from omni_trace.traces.chain import ChainReport
from omni_trace.traces.stats import percentile

FORMAT = "omni-trace-baseline/1"
QUANTILES = ("p50", "p95")
MAX_BYTES = 1_000_000  # a baseline is a few hundred bytes; a bigger file is not one


class BaselineError(CliError, ValueError):
    """A baseline file that cannot be read or is not a baseline."""


def _at(values: list[float], q: float) -> float:
    found = percentile(values, q)
    assert found is not None  # a hop is listed only with values
    return found


def hop_percentiles(reports: Iterable[ChainReport]) -> dict[str, dict[str, float]]:
    """Per hop: how many messages measured it, and its p50 and p95 in milliseconds. Messages
    only a client recorded are left out (the client's word alone)."""
    values: dict[str, list[float]] = {}
    for report in reports:
        if report.client_only:
            continue
        for hop, value in report.hops.items():
            if isinstance(value, int | float) and math.isfinite(value):
                values.setdefault(hop, []).append(float(value))
    return {
        hop: {"count": len(v), "p50": _at(v, 50), "p95": _at(v, 95)} for hop, v in values.items()
    }


@dataclass(frozen=True)
class Baseline:
    hops: dict[str, dict[str, float]]
    taken_unix_s: float
    source: dict[str, Any]

    @classmethod
    def of(cls, reports: Iterable[ChainReport], source: dict[str, Any]) -> Baseline:
        return cls(hop_percentiles(reports), time.time(), source)

    def as_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "taken_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.taken_unix_s)),
            "taken_unix_s": self.taken_unix_s,
            "source": self.source,
            "hops_ms": self.hops,
        }

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.as_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> Baseline:
        try:
            with path.open("rb") as file:
                raw = file.read(MAX_BYTES + 1)
        except OSError as err:
            raise BaselineError(f"cannot read baseline {path}: {err.strerror or err}") from None
        if len(raw) > MAX_BYTES:
            raise BaselineError(f"baseline {path} is over {MAX_BYTES} bytes: not a baseline")
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as err:
            raise BaselineError(f"baseline {path} is not JSON: {err}") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise BaselineError(f"baseline {path} is not an omni-trace baseline ({FORMAT})")
        hops = data.get("hops_ms")
        if not isinstance(hops, dict):
            raise BaselineError(f"baseline {path}: hops_ms is missing")
        checked: dict[str, dict[str, float]] = {}
        for hop, entry in hops.items():
            fields = ("count", *QUANTILES)
            if not isinstance(entry, dict) or not all(
                isinstance(entry.get(k), int | float)
                and not isinstance(entry.get(k), bool)
                and math.isfinite(entry[k])
                for k in fields
            ):
                raise BaselineError(f"baseline {path}: hop {hop!r} needs count, p50 and p95")
            checked[str(hop)] = {k: float(entry[k]) for k in fields}
        taken = data.get("taken_unix_s")
        source = data.get("source")
        return cls(
            checked,
            float(taken) if isinstance(taken, int | float) else 0.0,
            source if isinstance(source, dict) else {},
        )


@dataclass(frozen=True)
class Regression:
    hop: str
    quantile: str
    baseline_ms: float
    now_ms: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "hop": self.hop,
            "quantile": self.quantile,
            "baseline_ms": self.baseline_ms,
            "now_ms": self.now_ms,
        }

    def __str__(self) -> str:
        grew = (self.now_ms / self.baseline_ms - 1) * 100 if self.baseline_ms else math.inf
        return (
            f"hop {self.hop} regressed: {self.quantile} {self.baseline_ms:.1f} ms -> "
            f"{self.now_ms:.1f} ms (+{self.now_ms - self.baseline_ms:.1f} ms, +{grew:.0f}%)"
        )


@dataclass(frozen=True)
class Comparison:
    baseline: Baseline
    now: dict[str, dict[str, float]]
    tolerance: float
    min_ms: float
    regressions: list[Regression]

    @property
    def compared(self) -> list[str]:
        return [hop for hop in self.baseline.hops if hop in self.now]

    def as_dict(self) -> dict[str, Any]:
        return {
            "tolerance": self.tolerance,
            "min_ms": self.min_ms,
            "baseline": self.baseline.as_dict(),
            "now_hops_ms": self.now,
            "compared": self.compared,
            "regressions": [r.as_dict() for r in self.regressions],
        }


def compare(
    baseline: Baseline, reports: Iterable[ChainReport], tolerance: float, min_ms: float
) -> Comparison:
    now = hop_percentiles(reports)
    regressions = []
    for hop, before in baseline.hops.items():
        after = now.get(hop)
        if after is None or not before["count"]:
            continue
        for q in QUANTILES:
            grown = after[q] - before[q]
            if after[q] > before[q] * (1 + tolerance) and grown > min_ms:
                regressions.append(Regression(hop, q, before[q], after[q]))
    return Comparison(baseline, now, tolerance, min_ms, regressions)


def render(comparison: Comparison) -> str:
    base = comparison.baseline
    taken = base.as_dict()["taken_at"]
    where = ", ".join(f"{k} {v}" for k, v in base.source.items() if v)
    lines = [
        f"baseline of {taken}"
        + (f" ({where})" if where else "")
        + f": tolerance +{comparison.tolerance * 100:.0f}% and at least {comparison.min_ms:g} ms",
        f"  {'hop':<22} {'n':>4} {'p50 then':>9} {'p50 now':>9} {'p95 then':>9} {'p95 now':>9}",
    ]
    for hop in comparison.compared:
        b, n = base.hops[hop], comparison.now[hop]
        lines.append(
            f"  {hop:<22} {int(n['count']):>4} {b['p50']:>9.1f} {n['p50']:>9.1f} "
            f"{b['p95']:>9.1f} {n['p95']:>9.1f}"
        )
    if comparison.regressions:
        lines += [f"REGRESSED: {r}" for r in comparison.regressions]
    else:
        lines.append("no hop regressed")
    return "\n".join(lines)
