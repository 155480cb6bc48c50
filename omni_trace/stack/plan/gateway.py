"""Traefik: the gateway entry point (JWT ForwardAuth to auth, then OMNI2's replicas), the public
entry point for clients without a dashboard, and the front entry point before dashboard
replicas. The variables are those its dynamic file (config/traefik/dynamic.yml) reads."""

from __future__ import annotations

import os

from omni_trace.stack.configs import traefik_config
from omni_trace.stack.plan.process import Process, all_ready, http_ok, http_status
from omni_trace.stack.plan.run import Run


def traefik(run: Run) -> Process:
    info = run.info
    front = run.front_gateway
    return Process(
        "traefik",
        [str(run.traefik), f"--configFile={traefik_config(run)}"],
        {
            # Traefik's SDK exports every 5 s by default, which held a whole chain back by up
            # to 5 s (docs/performance.md); the services' delay is 200 ms too. The
            # environment's own value wins.
            "OTEL_BSP_SCHEDULE_DELAY": os.environ.get("OTEL_BSP_SCHEDULE_DELAY", "200"),
            "OMNI2_AUTH_VERIFY_URL": f"{info.auth_url}/verify",
            "OMNI2_BACKEND_URLS": ",".join(info.omni2_replicas),
            # The public entry point adds the edge key and hands over to `web`.
            "OMNI_EDGE_KEY": run.secrets.edge_key,
            "TRAEFIK_WEB_URL": info.traefik_url,
            "DASHBOARD_BACKEND_URLS": ",".join(info.dashboard_replicas) if front else "",
        },
        # Readiness is a request through the real route: 401 means the router is loaded and
        # ForwardAuth reached the auth service (404 = routes not loaded yet); the front
        # route, when there is one, reaches a dashboard.
        all_ready(
            http_status(f"{info.traefik_url}/ws/chat", 401),
            # ... and the public entry point's, through the gateway entry point.
            http_status(f"{info.traefik_public_url}/ws/chat", 401),
            *([http_ok(f"{info.dashboard_url}/healthz")] if front else []),
        ),
    )
