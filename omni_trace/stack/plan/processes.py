"""The whole plan: which processes this run starts (from the builders beside this module),
the order they start and stop in, and what each inherits from our environment."""

from __future__ import annotations

import functools
from collections.abc import Mapping

from omni_trace.stack.environment import allowed_environment, env_name, inherited
from omni_trace.stack.paths import FRONTEND_DIST
from omni_trace.stack.plan import gateway, jaeger, services, viewers
from omni_trace.stack.plan.addresses import prometheus_binary
from omni_trace.stack.plan.process import Process
from omni_trace.stack.plan.run import Run, sends_otlp_credential

# The Kafka trace pipeline's parts (trace_pipeline=kafka), in the order they start.
PIPELINE = (
    "kafka",
    "jaeger-storage",
    "jaeger-query",
    "jaeger-ingester-1",
    "jaeger-ingester-2",
    "jaeger-collector-1",
    "jaeger-collector-2",
    "otlp-balancer",
)
# Stopped in reverse: the services first, then the collectors (which flush to Kafka), the
# ingesters, and the storage last.
SERVICE_ORDER = (
    *PIPELINE,
    "jaeger",
    "auth",
    "mcp-tools",
    "omni2",
    "omni2-2",
    "traefik",
    "dashboard",
    "dashboard-2",
    "frontend",
    "prometheus",
    "flowview",
)
# Services of a stage start together; a stage waits until the one before is ready. Jaeger
# first (so no span is lost), Traefik last (its readiness is a request through auth to the
# route); OMNI2 reaches mcp-tools only when a message needs a tool.
START_STAGES = (
    ("jaeger", "kafka", "jaeger-storage"),
    PIPELINE[2:],
    ("auth", "mcp-tools", "omni2", "dashboard", "frontend", "prometheus", "flowview"),
    # After the first: two replicas creating and seeding one new database at once would race.
    ("omni2-2", "dashboard-2"),
    ("traefik",),
)


@functools.cache
def _not_inherited() -> frozenset[str]:
    """The secrets we make (given where they are used) and the service's name: never
    inherited. Named by the settings classes that read them (imported here: see services.py)."""
    from services.mcp_tools.settings import McpToolsSettings
    from services.omni2.settings import Omni2Settings

    secrets = ("jwt_secret", "dashboard_key", "edge_key", "mcp_auth_token")
    return frozenset(
        {
            "OTEL_SERVICE_NAME",
            env_name(McpToolsSettings, "auth_token"),
            *(env_name(Omni2Settings, name) for name in secrets),
        }
    )


# With our own Jaeger the services send the run's credential: a header variable of the shell
# (the signal-specific ones win over OTEL_EXPORTER_OTLP_HEADERS in the SDK) would replace it.
_OTLP_HEADER_VARIABLES = frozenset(
    {
        "OTEL_EXPORTER_OTLP_HEADERS",
        "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
        "OTEL_EXPORTER_OTLP_METRICS_HEADERS",
        "OTEL_EXPORTER_OTLP_LOGS_HEADERS",
    }
)


def plan_processes(
    run: Run, service_env: Mapping[str, Mapping[str, str]] | None = None
) -> dict[str, Process]:
    """Every process of this run, by name; `service_env` is added to a process's environment
    last (over what the plan gives it)."""
    processes = _traces(run)
    processes["auth"] = services.auth(run)
    processes["mcp-tools"] = services.mcp_tools(run)
    processes |= services.omni2_replicas(run)
    processes["traefik"] = gateway.traefik(run)
    processes |= services.dashboard_replicas(run)
    processes["frontend"] = services.frontend(run)
    processes |= _viewers(run)
    if not (FRONTEND_DIST / "index.html").is_file():
        run.progress(
            f"warning: the chat page is not built ({FRONTEND_DIST}); run scripts/bootstrap"
        )
    for name, process in processes.items():
        process.env = {**_inherit(run, name), **process.env}
    for name, extra in (service_env or {}).items():
        processes[name].env.update(extra)
    return processes


def _traces(run: Run) -> dict[str, Process]:
    """The Kafka pipeline, the one Jaeger, or nothing (a configured Jaeger elsewhere)."""
    if run.info.trace_pipeline == "kafka":
        return jaeger.kafka_pipeline(run)
    if run.settings.jaeger_query_url:
        return {}
    return {"jaeger": jaeger.jaeger(run)}


def _viewers(run: Run) -> dict[str, Process]:
    processes = {}
    binary = prometheus_binary(run.settings)
    if run.info.prometheus_url and binary:
        processes["prometheus"] = viewers.prometheus(run, binary)
    elif run.info.flowview_url and not binary:
        run.progress(
            "note: no Prometheus (Debian's prometheus package; scripts/bootstrap installs "
            "it): the flow view works without its hop chart"
        )
    if run.info.flowview_url:
        processes["flowview"] = viewers.flowview(run)
    return processes


def _inherit(run: Run, name: str) -> dict[str, str]:
    """What a process inherits from our environment: only the variables it reads
    (omni_trace/stack/environment.py), never the secrets we make (given where they are used)
    nor, with our own Jaeger, a shell's OTLP header that would replace our credential."""
    refused = _not_inherited() | (
        _OTLP_HEADER_VARIABLES if sends_otlp_credential(run.settings) else frozenset()
    )
    found = inherited(allowed_environment(name))
    return {k: v for k, v in found.items() if k.upper() not in refused}
