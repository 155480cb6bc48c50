"""`omni-trace bench`: the report's shape, nothing lost, chains whole. No timing is asserted:
the numbers are for people to read as ratios measured in one run."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from omni_trace.cli import main
from omni_trace.stack.bench import bench_stack, merge_runs, percentile, sample_process
from omni_trace.stack.settings import StackSettings
from otel.names import Service

MEASURES = ("burst_ttft_p50", "burst_ttft_p99", "burst_latency_p50", "burst_latency_p99")


def test_percentiles_interpolate() -> None:
    assert percentile([], 50) is None
    assert percentile([3.0], 99) == 3.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile(list(map(float, range(101))), 99) == 99.0


def test_rounds_merge_into_totals_and_medians() -> None:
    rounds = [
        {"tracing": True, "burst": {"lost": 0, "ttft_ms": {"p50": 10.0}, "errors": ["a"]}},
        {"tracing": True, "burst": {"lost": 2, "ttft_ms": {"p50": 30.0}, "errors": ["a", "b"]}},
        {"tracing": True, "burst": {"lost": 1, "ttft_ms": {"p50": 20.0}, "errors": []}},
    ]
    merged = merge_runs(rounds)
    assert merged == {
        "tracing": True,
        "burst": {"lost": 3, "ttft_ms": {"p50": 20.0}, "errors": ["a", "b"]},
    }


def test_process_samples_come_from_proc() -> None:
    sample = sample_process(os.getpid())
    assert sample is not None
    assert sample.cpu_s > 0 and 0 < sample.rss_mb <= sample.peak_rss_mb
    assert sample_process(2**22 + 12345) is None  # no such process


@pytest.mark.stack
@pytest.mark.slow  # its own stacks: not in `scripts/test --quick`
def test_quick_bench_reports_both_runs_side_by_side(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["bench", "--quick", "--json", "--run-dir", str(tmp_path)])
    report = json.loads(capsys.readouterr().out)
    assert code == 0
    on, off = report["on"], report["off"]
    assert on["tracing"] is True and off["tracing"] is False
    for run in (on, off):
        assert run["burst"]["lost"] == 0 and run["steady"]["lost"] == 0
        assert run["burst"]["answered"] == report["config"]["burst"]
        assert run["steady"]["turns"] == report["config"]["clients"] * report["config"]["messages"]
        assert {"dashboard", "omni2", "traefik"} <= set(run["steady"]["cpu_ms_per_turn_by_process"])
        assert set(run["hops"]["message_round_trip_ms"]) == {"dashboard", "traefik", "omni2"}
        assert run["start_s"] > 0
        assert 0 < run["burst"]["cores_busy_pct"] < 110  # /proc counts in 10 ms ticks
        history = run["history"]
        assert history["stored_messages"] == report["config"]["history_rows"]
        # Tick-counted (10 ms): one short block may read 0, all three together may not.
        kinds = ("fresh_database", "fresh", "long_history")
        cpu = [history[f"omni2_cpu_ms_per_turn_{kind}"] for kind in kinds]
        assert all(ms is not None and ms >= 0 for ms in cpu) and sum(cpu) > 0, history
    assert set(MEASURES) <= set(report["ratios"])
    assert len(report["rounds"]) == report["config"]["rounds"] == 1
    assert all(report["ratios"][m] is not None for m in MEASURES)
    chains = on["burst"]["chains"]
    assert chains["checked"] > 0 and chains["whole"] == chains["checked"], chains["broken"]
    tool_free = on["spans"]["tool_free"]["by_service"]
    assert tool_free[Service.DASHBOARD] >= 1 and tool_free[Service.OMNI2] >= 1
    assert Service.MCP_TOOLS in on["spans"]["tool_calling"]["by_service"]
    assert off["spans"] == {}  # tracing off: nothing was exported to count ...
    assert off["exported_by"] == []  # ... by any layer, Traefik included
    assert {Service.TRAEFIK, Service.DASHBOARD, Service.OMNI2} <= set(on["exported_by"])


def test_the_bench_lifts_the_frame_limits_of_every_dashboard_and_omni2_replica(
    tmp_path: Path,
) -> None:
    # An external Jaeger: planning needs no Jaeger binary.
    settings = StackSettings(
        jaeger_query_url="http://127.0.0.1:9",
        jaeger_otlp_endpoint="http://127.0.0.1:9",
        omni2_replicas=2,
        dashboard_replicas=2,
    )
    stack = bench_stack(settings, tmp_path)
    stack.config_dir.mkdir(parents=True)
    plan = stack._plan()
    for name, prefix in (
        ("dashboard", "DASHBOARD"),
        ("dashboard-2", "DASHBOARD"),
        ("omni2", "OMNI2"),
        ("omni2-2", "OMNI2"),
    ):
        env = plan[name].env
        assert float(env[f"{prefix}_FRAMES_PER_SECOND"]) >= 1e6, name
        assert int(env[f"{prefix}_FRAME_BURST"]) >= 1e6, name


def test_a_database_url_with_a_password_is_refused_on_the_command_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Every user of the machine reads a process's arguments in /proc: the environment it is.
    with pytest.raises(SystemExit) as refused:
        main(["bench", "--database-url", "postgresql+asyncpg://omni:s3cret@127.0.0.1/omni2"])
    assert "OMNI_TRACE_DATABASE_URL" in str(refused.value.code)
    assert "s3cret" not in str(refused.value.code) + capsys.readouterr().err
