"""Our Python services: auth, mcp-tools, OMNI2 and the dashboard (each replica), the chat
page's server. Each variable a service reads is named by its settings class (`settings_env`):
a renamed setting fails the plan's tests, not a running stack. The settings classes are
imported where used: the toolkit installs without the services' packages."""

from __future__ import annotations

import json
import sys

from omni_trace.stack.environment import settings_env
from omni_trace.stack.plan.process import Process, http_ok
from omni_trace.stack.plan.run import Run
from omni_trace.traces.audit import flow_view_url


def _python(module: str) -> list[str]:
    return [sys.executable, "-m", module]


def _replica_name(base: str, n: int) -> str:
    return base if n == 1 else f"{base}-{n}"


def auth(run: Run) -> Process:
    from services.auth.settings import AuthSettings

    s = run.secrets
    env = settings_env(
        AuthSettings,
        jwt_secret=s.jwt_secret,
        dashboard_key=s.dashboard_key,
        edge_key=s.edge_key,
        host=run.host,
        port=str(run.ports.auth),
    )
    return Process(
        "auth",
        _python("services.auth"),
        {**run.traced_env(), **env},
        http_ok(f"{run.info.auth_url}/healthz"),
    )


def mcp_tools(run: Run) -> Process:
    """The MCP tool server: no JWT secret; it answers only OMNI2 (the run's token)."""
    from services.mcp_tools.settings import McpToolsSettings

    env = settings_env(
        McpToolsSettings,
        host=run.host,
        port=str(run.ports.mcp_tools),
        sample_db=str(run.run_dir / "mcp-sample.db"),
        auth_token=run.secrets.mcp_auth_token,
    )
    return Process(
        "mcp-tools",
        _python("services.mcp_tools"),
        {**run.traced_env(), **env},
        http_ok(f"http://{run.host}:{run.ports.mcp_tools}/healthz"),
    )


def omni2_replicas(run: Run) -> dict[str, Process]:
    """OMNI2, and its second replica when the settings ask for two (Traefik balances)."""
    replicas = run.info.omni2_replicas
    processes = {}
    for n, url in enumerate(replicas, 1):
        name = _replica_name("omni2", n)
        env = {**run.traced_env(), **_omni2_env(run, url, name, len(replicas))}
        processes[name] = Process(name, _python("services.omni2"), env, http_ok(f"{url}/healthz"))
    return processes


def _omni2_env(run: Run, url: str, name: str, replicas: int) -> dict[str, str]:
    from services.omni2.settings import Omni2Settings

    s, info = run.secrets, run.info
    values = {
        "jwt_secret": s.jwt_secret,
        "host": run.host,
        "port": url.rsplit(":", 1)[1],
        "model_token_delay_ms": str(run.settings.model_token_delay_ms),
        "database_url": info.omni2_database_url,
        "mcp_url": info.mcp_url,
        "mcp_auth_token": s.mcp_auth_token,
        "dashboard_key": s.dashboard_key,
        "edge_key": s.edge_key,
        "demo_users_file": str(run.demo_users_file),
    }
    if run.settings.conversation_sample_ratio is not None:
        values["conversation_sample_ratio"] = str(run.settings.conversation_sample_ratio)
    env = settings_env(Omni2Settings, **values)
    if replicas > 1:  # one connection limit across the replicas
        env |= settings_env(Omni2Settings, connection_slots="database", replica_id=name)
        env["OTEL_RESOURCE_ATTRIBUTES"] = f"service.instance.id={name}"
    return env


def dashboard_replicas(run: Run) -> dict[str, Process]:
    """The dashboard, or two behind Traefik's front entry point."""
    replicas = run.info.dashboard_replicas
    processes = {}
    for n, url in enumerate(replicas, 1):
        name = _replica_name("dashboard", n)
        env = {**run.traced_env(), **_dashboard_env(run, url, name, len(replicas))}
        processes[name] = Process(
            name, _python("services.dashboard"), env, http_ok(f"{url}/healthz")
        )
    return processes


def _dashboard_env(run: Run, url: str, name: str, replicas: int) -> dict[str, str]:
    from services.dashboard.settings import DashboardSettings

    info = run.info
    env = settings_env(
        DashboardSettings,
        jwt_secret=run.secrets.jwt_secret,
        host=run.host,
        port=url.rsplit(":", 1)[1],
        upstream_ws_url=info.traefik_ws_url,
        dashboard_key=run.secrets.dashboard_key,
        # Logins read users from OMNI2's database; refusals are written to it.
        database_url=info.omni2_database_url,
        allowed_origins=json.dumps([info.frontend_url]),
    )
    if replicas > 1:  # behind Traefik's front entry point
        env |= settings_env(
            DashboardSettings,
            behind_gateway="true",
            # X-Forwarded-For only from Traefik, which reaches a replica on its own address (a
            # client that reaches a replica's port directly is counted on its address, whatever
            # header it wrote).
            trusted_proxies=json.dumps([run.host]),
            # Failed logins counted once across the replicas, in the database.
            login_limits="database",
        )
        env["OTEL_RESOURCE_ATTRIBUTES"] = f"service.instance.id={name}"
    return env


def frontend(run: Run) -> Process:
    """The chat page's server: no JWT secret; the page exports to the public path."""
    from services.frontend.settings import FrontendSettings

    info = run.info
    env = settings_env(
        FrontendSettings,
        host=run.host,
        port=str(run.ports.frontend),
        dashboard_url=info.dashboard_url,
        chat_ws_url=info.dashboard_ws_url,
        # The page runs in a browser: it exports to the public path.
        otlp_traces_url=f"{info.otlp_http_endpoint}/v1/traces",
        jaeger_query_url=info.jaeger_query_url,
        trace_url_template=trace_link(run),
    )
    return Process(
        "frontend",
        _python("services.frontend"),
        {**run.traced_env(), **env},
        http_ok(f"{info.frontend_url}/healthz"),
    )


def trace_link(run: Run) -> str:
    """Where the chat page's trace links lead: a configured Jaeger's UI, else the flow view
    (the Jaeger built here has no web UI), else Jaeger's JSON."""
    if run.settings.jaeger_query_url:
        return "{jaeger_query_url}/trace/{trace_id}"
    if run.info.flowview_url:
        return flow_view_url(run.info.flowview_url, "{trace_id}")
    return "{jaeger_query_url}/api/traces/{trace_id}"
