"""`omni-trace bench --scale`: the report's shape, nothing lost, every chain whole, the
replicas really there. No timing is asserted: the numbers are for people to read."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from omni_trace.bench.scale_report import ScaleReport, render
from omni_trace.cli import main
from tests.omni_trace.bench.keys import DATA, shape


def test_help_explains_the_scale_mode(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["bench", "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    assert "--scale" in text and "--samples" in text
    assert "1 vs 2 OMNI2 replicas" in text and "done -> queryable" in text


@pytest.mark.parametrize("option", [["--history-rows", "10"], ["--database-url", "sqlite://"]])
def test_on_off_options_are_refused_with_scale(option: list[str]) -> None:
    with pytest.raises(SystemExit) as refused:
        main(["bench", "--scale", *option])
    assert f"{option[0]} belong to the on/off bench" in str(refused.value.code)


def test_samples_is_refused_without_scale() -> None:
    with pytest.raises(SystemExit) as refused:
        main(["bench", "--samples", "3"])
    assert "--samples is an option of --scale" in str(refused.value.code)


@pytest.mark.stack
@pytest.mark.slow  # its own stacks: not in `scripts/test --quick`
def test_quick_scale_bench_loses_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["bench", "--scale", "--quick", "--json", "--run-dir", str(tmp_path)])
    printed = capsys.readouterr()
    assert printed.out, printed.err  # no report: the error is on stderr
    report = json.loads(printed.out)
    cfg, stacks = report["config"], report["stacks"]

    # What each measure ran on, as the stacks started it.
    parts = ("trace_pipeline", "database", "dashboard_replicas", "omni2_replicas")
    started = {name: tuple(stack[p] for p in parts) for name, stack in stacks.items()}
    assert started == {
        "small": ("memory", "sqlite", 1, 1),
        "scale_1_omni2": ("kafka", "postgresql", 2, 1),
        "scale_2_omni2": ("kafka", "postgresql", 2, 2),
    }
    assert all(stack["start_s"] > 0 for stack in stacks.values())

    # The burst through the scale profile: every message answered, every trace whole.
    burst = report["burst"]
    assert burst["sent"] == burst["answered"] == cfg["burst"], burst["errors"]
    assert burst["lost"] == 0
    traces = burst["traces"]
    assert traces["answered"] == traces["in_jaeger"] == cfg["burst"]
    assert traces["whole"] == cfg["burst"], traces["broken"]
    assert traces["broken"] == [] and traces["failed_but_whole"] == 0
    assert burst["ttft_ms"]["p50"] > 0 and burst["latency_ms"]["p99"] > 0
    assert burst["zero_lost"] is True and report["zero_lost"] is True and code == 0

    # The same steady load with 1 and 2 OMNI2 replicas, the second one really working.
    throughput = report["throughput"]
    for replicas in ("omni2_1", "omni2_2"):
        steady = throughput[replicas]
        turns = cfg["clients"] * cfg["messages"] * cfg["rounds"]
        assert steady["turns"] == turns and steady["lost"] == 0
        assert steady["turns_per_s"] > 0
        assert len(steady["turns_per_s_by_round"]) == cfg["rounds"]
    assert "omni2-2" not in throughput["omni2_1"]["cpu_ms_per_turn_by_process"]
    assert throughput["omni2_2"]["cpu_ms_per_turn_by_process"]["omni2-2"] > 0
    assert throughput["turns_per_s_2_over_1"] > 0
    assert len(throughput["ratio_by_round"]) == cfg["rounds"]

    # done -> queryable on both pipelines: every sample whole, its spans no later than that.
    for pipeline in ("small", "kafka"):
        queryable = report["queryable"][pipeline]
        assert queryable["samples"] == cfg["samples"]
        assert queryable["whole"] == cfg["samples"], queryable
        assert queryable["unanswered"] == queryable["late"] == 0
        spans, whole = queryable["message_spans_ms"], queryable["whole_chain_ms"]
        assert 0 < spans["p50"] <= spans["max"] <= whole["max"]
        assert spans["p50"] <= whole["p50"]

    # The JSON's keys and shape are those the bench wrote before its reports were typed.
    assert shape(report) == shape(json.loads((DATA / "scale_report.json").read_text()))
    text = render(ScaleReport.from_dict(report))
    sent = cfg["burst"]
    assert f"sent {sent}, answered {sent}, lost 0" in text
    assert "0 lost: yes" in text and text.rstrip().endswith("verdict: 0 lost")
    assert "turns per second" in text and "whole chain p99 (ms)" in text
