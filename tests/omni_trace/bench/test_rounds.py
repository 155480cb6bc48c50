"""`omni-trace bench`: the report's shape, nothing lost, chains whole. No timing is asserted:
the numbers are for people to read as ratios measured in one run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from omni_trace.bench.rounds import pool
from omni_trace.bench.stats import merge_runs
from omni_trace.cli import main
from otel.names import Service
from tests.omni_trace.bench.keys import DATA, shape

MEASURES = ("ttft_p50", "ttft_p99", "latency_p50", "latency_p99")


def test_burst_samples_of_the_rounds_pool_into_one_distribution() -> None:
    # Each round's tail is a handful of messages: pooled, the slow round's tail shows.
    def run(ttft: list[float], slowest: str, latency_ms: float) -> dict[str, Any]:
        samples = {"ttft": ttft, "latency": [2.0] * len(ttft)}
        timeline = {"latency_ms": latency_ms, "trace_id": slowest}
        return {"bursts": {"10s": {"samples_ms": samples, "slowest": [timeline]}}}

    fast, slow = run([1.0] * 99, "a", 2.0), run([1.0] * 98 + [50.0], "b", 9.0)
    burst = pool(merge_runs([fast, slow]))["bursts"]["10s"]
    assert len(burst["samples_ms"]["ttft"]) == 198
    assert burst["ttft_ms"]["p50"] == 1.0
    assert burst["ttft_ms"]["p999"] > 1.0  # the one slow sample of 198
    assert [t["trace_id"] for t in burst["slowest"]] == ["b", "a"]


@pytest.mark.stack
@pytest.mark.slow  # its own stacks: not in `scripts/test --quick`
def test_quick_bench_reports_both_runs_side_by_side(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["bench", "--quick", "--json", "--run-dir", str(tmp_path)])
    report = json.loads(capsys.readouterr().out)
    assert code == 0
    cfg = report["config"]
    costs = report["span_costs_us"]
    assert all(costs[stage] > 0 for stage in ("sdk_spans", "sampler_and_processors", "encoding"))
    on, off, up = report["on"], report["off"], report["up"]
    assert (on["tracing"], off["tracing"], up["tracing"]) == (True, False, True)
    assert list(on["bursts"]) == list(off["bursts"]) == ["1s"]  # --quick: one burst
    for run in (on, off):
        burst = run["bursts"]["1s"]
        assert burst["lost"] == 0 and burst["answered"] == cfg["burst"]
        assert len(burst["samples_ms"]["ttft"]) == cfg["burst"]
        assert set(burst["ttft_ms"]) == {"p50", "p95", "p99", "p999"}
        assert 0 < burst["cores_busy_pct"] < 110  # /proc counts in 10 ms ticks
        assert burst["cpu_ms_per_connection"] > 0
        assert set(run["hops"]["message_round_trip_ms"]) == {"dashboard", "traefik", "omni2"}
        history = run["history"]
        assert history["stored_messages"] == cfg["history_rows"]
        # Tick-counted (10 ms): one short block may read 0, all three together may not.
        kinds = ("fresh_database", "fresh", "long_history")
        cpu = [history[f"omni2_cpu_ms_per_turn_{kind}"] for kind in kinds]
        assert all(ms is not None and ms >= 0 for ms in cpu) and sum(cpu) > 0, history
    for run in (on, off, up):
        steady = run["steady"]
        assert steady["lost"] == 0 and steady["turns"] == cfg["clients"] * cfg["messages"]
        assert len(steady["cpu_ms_per_turn_by_block"]) == cfg["steady_blocks"]
        assert {"dashboard", "omni2", "traefik"} <= set(steady["cpu_ms_per_turn_by_process"])
        assert run["start_s"] > 0
    # As `omni-trace up` runs it: the flow view is measured, per message it judged.
    assert "flowview" in up["steady"]["cpu_ms_per_turn_by_process"]
    assert "flowview" not in on["steady"]["cpu_ms_per_turn_by_process"]
    assert all(report["ratios"][f"burst_1s_{m}"] is not None for m in MEASURES)
    assert len(report["rounds"]) == cfg["rounds"] == 1
    chains = on["bursts"]["1s"]["chains"]
    assert chains["checked"] > 0 and chains["whole"] == chains["checked"], chains["broken"]
    slowest = on["bursts"]["1s"]["slowest"]
    assert slowest and all(t["spans"] for t in slowest)
    services = {span[2] for t in slowest for span in t["spans"]}
    assert {Service.CHAT_CLIENT, Service.DASHBOARD, Service.OMNI2} <= services
    tool_free = on["spans"]["tool_free"]["by_service"]
    assert tool_free[Service.DASHBOARD] >= 1 and tool_free[Service.OMNI2] >= 1
    assert Service.MCP_TOOLS in on["spans"]["tool_calling"]["by_service"]
    assert off["spans"] == {}  # tracing off: nothing was exported to count ...
    assert off["exported_by"] == []  # ... by any layer, Traefik included
    assert {Service.TRAEFIK, Service.DASHBOARD, Service.OMNI2} <= set(on["exported_by"])
    # The JSON's keys and shape are those of a full run's report written before the bench
    # became typed (bench_report.json).
    stored = json.loads((DATA / "bench_report.json").read_text())
    assert shape(report) == shape(stored)


def test_a_database_url_with_a_password_is_refused_on_the_command_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Every user of the machine reads a process's arguments in /proc: the environment it is.
    with pytest.raises(SystemExit) as refused:
        main(["bench", "--database-url", "postgresql+asyncpg://omni:s3cret@127.0.0.1/omni2"])
    assert "OMNI_TRACE_DATABASE_URL" in str(refused.value.code)
    assert "s3cret" not in str(refused.value.code) + capsys.readouterr().err
