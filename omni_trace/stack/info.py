"""What the stack file holds: how to reach every layer of a running stack (`StackInfo`), and
the summary `omni-trace up` prints of it."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from omni_trace.stack.errors import StackError
from omni_trace.stack.paths import write_private


@dataclass(frozen=True)
class StackInfo:
    """What the stack file holds: how to reach every layer of a running stack."""

    dashboard_url: str
    dashboard_ws_url: str
    traefik_url: str
    traefik_ws_url: str  # the gateway entry point: the dashboard's way in (its key)
    auth_url: str
    omni2_url: str
    omni2_ws_url: str
    jaeger_query_url: str
    # The public OTLP/HTTP path: what browsers and chat clients export to (traces of the
    # client services only, stamped chat.telemetry.path=public). An external Jaeger's one URL.
    otlp_http_endpoint: str
    logs_dir: str
    traefik_access_log: str
    # Defaulted so that a stack file written before the browser layer existed still reads.
    frontend_url: str = ""
    mcp_url: str = ""
    omni2_database_url: str = ""  # may hold a password: the stack file is for this machine
    flowview_url: str = ""
    prometheus_url: str = ""  # empty: no Prometheus on this machine (no hop chart)
    # host:port (UDP) where a jaeger-client service reports its spans; empty: external Jaeger
    jaeger_thrift_compact: str = ""
    # The demo logins OMNI2 seeded (public demo credentials; empty when it seeds none).
    demo_passwords: dict[str, str] = field(default_factory=dict)
    # memory: one Jaeger. kafka: collectors > Kafka > ingesters > Badger (see jaeger_parts).
    # Every OMNI2 replica's URL (the first is omni2_url); Traefik balances between them.
    omni2_replicas: list[str] = field(default_factory=list)
    # Every dashboard process's own URL. With two, dashboard_url is Traefik's front entry
    # point, which balances between them.
    dashboard_replicas: list[str] = field(default_factory=list)
    trace_pipeline: str = "memory"
    kafka_brokers: str = ""
    # Each part of the Kafka pipeline and its health URL (collectors, ingesters, storage, query).
    jaeger_parts: dict[str, str] = field(default_factory=dict)
    # Traefik's public entry point: for clients that reach the gateway without a dashboard
    # (it strips their trace context; `web` then traces them as OMNI2 decides).
    traefik_public_ws_url: str = ""
    traefik_public_url: str = ""  # the same, as HTTP (for readiness and the doctor)
    # The internal OTLP path (HTTP base URL): our services and Traefik, with the run's
    # credential (never in this file). Empty in a stack file written before it existed.
    otlp_internal_endpoint: str = ""
    # Each Jaeger process's own metrics (/metrics): the spans its filters refused. Empty: an
    # external Jaeger.
    jaeger_telemetry_urls: list[str] = field(default_factory=list)
    pid: int = field(default_factory=os.getpid)

    def write(self, path: Path) -> None:
        """Written 0600 under a fresh name, then renamed: it may hold a database password,
        and its directory may be one where others can plant a name first."""
        path.parent.mkdir(parents=True, exist_ok=True)
        write_private(path, json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def read(cls, path: Path) -> StackInfo:
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise StackError(
                f"no stack file at {path}: start the stack with `omni-trace up` "
                "(or pass --stack-file)"
            ) from None
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


def stack_summary(info: StackInfo) -> dict[str, Any]:
    return {
        "chat page (browser)": info.frontend_url,
        "WebSocket test page": f"{info.frontend_url}/test_ws_chat.html",
        "dashboard (login, /ws/chat)": info.dashboard_url,
        **(
            {"dashboard replicas": ", ".join(info.dashboard_replicas)}
            if len(info.dashboard_replicas) > 1
            else {}
        ),
        "traefik (gateway)": info.traefik_url,
        "traefik public entry (clients without a dashboard)": info.traefik_public_ws_url,
        "auth (ForwardAuth)": info.auth_url,
        "omni2 (backend)": ", ".join(info.omni2_replicas) or info.omni2_url,
        "mcp-tools (MCP server)": info.mcp_url,
        "jaeger query API": info.jaeger_query_url,
        "flow view (browser)": info.flowview_url,
        "OTLP/HTTP public (browsers)": info.otlp_http_endpoint,
        **(
            {"OTLP internal (services)": f"{info.otlp_internal_endpoint} (with the credential)"}
            if info.otlp_internal_endpoint
            and info.otlp_internal_endpoint != info.otlp_http_endpoint
            else {}
        ),
        **(
            {"Kafka (trace pipeline)": info.kafka_brokers, **info.jaeger_parts}
            if info.trace_pipeline == "kafka"
            else {}
        ),
        **(
            {"refused-span metric": ", ".join(info.jaeger_telemetry_urls)}
            if info.jaeger_telemetry_urls
            else {}
        ),
        "logs": info.logs_dir,
    }
