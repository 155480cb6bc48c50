"""The latency gate per hop (`audit --save-baseline` / `--baseline`) on built chain reports."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from omni_trace.traces import ChainReport
from omni_trace.traces.baseline import (
    Baseline,
    BaselineError,
    compare,
    hop_percentiles,
    render,
)
from omni_trace.traces.stats import percentile


def reports(**hops: Sequence[float | None]) -> list[ChainReport]:
    """One report per position: hop name -> each message's value."""
    count = max(len(v) for v in hops.values())
    return [
        ChainReport(trace_id=f"{i:032x}", hops={hop: values[i] for hop, values in hops.items()})
        for i in range(count)
    ]


def test_percentiles_per_hop_with_counts() -> None:
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile([5.0], 95) == 5.0
    found = hop_percentiles(
        reports(model=[10, 20, 30, 40, 50], tools=[None, None, 5.0, None, None])
    )
    assert found["model"] == {"count": 5, "p50": 30.0, "p95": pytest.approx(48.0)}
    assert found["tools"] == {"count": 1, "p50": 5.0, "p95": 5.0}
    only_client = ChainReport(trace_id="f" * 32, hops={"model": 1000.0}, client_only=True)
    assert hop_percentiles([*reports(model=[1, 1]), only_client])["model"]["count"] == 2


def test_saved_and_loaded_baseline(tmp_path: Path) -> None:
    path = tmp_path / "baseline.json"
    source = {"jaeger": "http://127.0.0.1:16686", "query": "the last 3600 s", "spec": "omni2"}
    Baseline.of(reports(model=[10, 12], total=[20, 24]), source).save(path)
    data = json.loads(path.read_text())
    assert data["format"] == "omni-trace-baseline/1" and data["source"] == source
    assert data["hops_ms"]["total"]["count"] == 2 and data["taken_at"].endswith("Z")
    loaded = Baseline.load(path)
    assert loaded.hops["model"]["p50"] == 11.0 and loaded.source == source


def test_a_hop_regresses_past_both_the_ratio_and_the_floor() -> None:
    baseline = Baseline.of(reports(model=[100, 100, 100], c_to_d=[0.1, 0.1, 0.1]), {})
    # The model twice as slow: regressed; the 0.1 ms hop twice as slow is under the floor.
    now = reports(model=[200, 200, 200], c_to_d=[0.2, 0.2, 0.2])
    result = compare(baseline, now, tolerance=0.25, min_ms=5.0)
    assert [(r.hop, r.quantile) for r in result.regressions] == [("model", "p50"), ("model", "p95")]
    assert str(result.regressions[0]) == (
        "hop model regressed: p50 100.0 ms -> 200.0 ms (+100.0 ms, +100%)"
    )
    assert "REGRESSED: hop model" in render(result)
    assert result.as_dict()["regressions"][0]["baseline_ms"] == 100.0
    # Within the tolerance; or over it by less than the floor: not regressed.
    assert not compare(baseline, reports(model=[120, 120]), 0.25, 5.0).regressions
    assert not compare(baseline, reports(model=[104, 104]), 0.01, 5.0).regressions
    # Faster, or a hop only one side measured: never a regression.
    assert not compare(baseline, reports(model=[50], tools=[900]), 0.25, 5.0).regressions
    same = compare(baseline, reports(model=[100, 100, 100], c_to_d=[0.1, 0.1, 0.1]), 0.0, 0.0)
    assert not same.regressions and "no hop regressed" in render(same)


def test_only_p95_regressed() -> None:
    baseline = Baseline.of(reports(total=[10.0] * 20), {})
    spiky = reports(total=[10.0] * 18 + [90.0, 90.0])
    (regression,) = compare(baseline, spiky, 0.25, 5.0).regressions
    assert (regression.hop, regression.quantile) == ("total", "p95")


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (None, "cannot read baseline"),
        ("{not json", "is not JSON"),
        ('{"format": "other"}', "not an omni-trace baseline"),
        ('{"format": "omni-trace-baseline/1"}', "hops_ms is missing"),
        ('{"format": "omni-trace-baseline/1", "hops_ms": {"m": {"p50": "x"}}}', "hop 'm' needs"),
        (
            '{"format": "omni-trace-baseline/1", "hops_ms": {"m": {"count": 1, "p50": NaN, '
            '"p95": 1}}}',
            "hop 'm' needs",
        ),
        ("[]", "not an omni-trace baseline"),
        ("x" * 1_000_001, "over 1000000 bytes"),
    ],
)
def test_a_missing_or_corrupt_baseline_is_a_clear_error(
    tmp_path: Path, content: str | None, says: str
) -> None:
    path = tmp_path / "baseline.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(BaselineError, match=says):
        Baseline.load(path)


def test_the_audit_exits_2_on_a_bad_baseline_before_asking_jaeger(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from omni_trace.cli import main

    path = tmp_path / "corrupt.json"
    path.write_text("{")
    # Jaeger on a port nothing listens on: the baseline is read (and refused) first.
    args = ["audit", "--jaeger", "http://127.0.0.1:9", "--baseline"]
    assert main([*args, str(path)]) == 2
    assert f"baseline {path} is not JSON" in capsys.readouterr().err
    assert main([*args, str(tmp_path / "missing.json")]) == 2
    assert "cannot read baseline" in capsys.readouterr().err
    assert main(["audit", "--jaeger", "http://127.0.0.1:9", "--tolerance", "-0.5"]) == 2
    assert "cannot be negative" in capsys.readouterr().err
