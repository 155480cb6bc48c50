"""What shows the traces, off the chat's path: Prometheus (Jaeger's span metrics and the flow
view's audit, for the hop chart) and the flow view."""

from __future__ import annotations

import sys

from omni_trace.stack.configs import flowview_token_file, prometheus_config
from omni_trace.stack.environment import settings_env
from omni_trace.stack.plan.process import Process, http_ok
from omni_trace.stack.plan.run import Run
from omni_trace.stack.ports import is_loopback


def prometheus(run: Run, binary: str) -> Process:
    return Process(
        "prometheus",
        [
            binary,
            f"--config.file={prometheus_config(run)}",
            f"--storage.tsdb.path={run.run_dir / 'prometheus'}",
            f"--web.listen-address={run.host}:{run.ports.prometheus}",
            "--log.level=warn",
        ],
        {},
        http_ok(f"{run.info.prometheus_url}/-/ready"),
    )


def flowview(run: Run) -> Process:
    # Imported here, as the services' settings are (it imports this package's modules).
    from omni_trace.flowview.settings import FlowViewSettings

    env = settings_env(
        FlowViewSettings,
        host=run.host,
        port=str(run.ports.flowview),
        jaeger_query_url=run.info.jaeger_query_url,
        prometheus_url=run.info.prometheus_url,
    )
    # Off loopback the flow view asks for a token (it refuses to start without one).
    if not is_loopback(run.host):
        run.progress(f"flow view: its access token is in {flowview_token_file(run)}")
        env |= settings_env(FlowViewSettings, access_token=run.secrets.flowview_token)
    return Process(
        "flowview",
        [sys.executable, "-m", "omni_trace.flowview"],
        {"PYTHONUNBUFFERED": "1", **env},
        http_ok(f"{run.info.flowview_url}/healthz"),
    )
