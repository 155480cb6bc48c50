"""The stacks a bench loads."""

from __future__ import annotations

from pathlib import Path

from omni_trace.bench.stacks import bench_stack
from omni_trace.stack.settings import StackSettings


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
