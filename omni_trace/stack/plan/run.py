"""What every builder of the plan reads: the run's settings, ports, addresses, secrets and
directories (`Run`), and what several processes are told alike (the tracing environment, the
entrance keys, the internal OTLP path's credential)."""

from __future__ import annotations

import base64
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from opentelemetry.util.re import parse_env_headers

from omni_trace.stack.errors import StackError
from omni_trace.stack.info import StackInfo
from omni_trace.stack.paths import traefik_binary
from omni_trace.stack.ports import Ports
from omni_trace.stack.settings import StackSettings

Progress = Callable[[str], None]
# The user name of the internal OTLP path's credential (the password is made per run).
OTLP_USER = "omni-trace"


@dataclass(frozen=True)
class RunSecrets:
    """Made per run and passed in the environment of the processes that use them only (never
    in the stack file)."""

    jwt_secret: str
    # The MCP tool server answers only OMNI2.
    mcp_auth_token: str
    # The keys of our two entrances to the gateway (services/common/provenance.py): the
    # dashboards' (dashboard, auth, OMNI2) and Traefik's public entry point's (Traefik, auth,
    # OMNI2).
    dashboard_key: str
    edge_key: str
    # The flow view's, asked only when it binds beyond loopback.
    flowview_token: str
    # The internal OTLP path's: to Jaeger (as a hash), the services and Traefik's config.
    otlp_password: str

    @classmethod
    def make(cls, jwt_secret: str | None = None) -> RunSecrets:
        def token() -> str:
            return secrets.token_urlsafe(32)

        return cls(jwt_secret or token(), token(), token(), token(), token(), token())


def sends_otlp_credential(settings: StackSettings) -> bool:
    """Only our own Jaeger gets the run's credential: with OMNI_TRACE_JAEGER_OTLP_ENDPOINT the
    telemetry goes elsewhere, under that collector's own rules."""
    return not settings.jaeger_query_url and not settings.jaeger_otlp_endpoint


@dataclass(frozen=True)
class Run:
    settings: StackSettings
    ports: Ports
    info: StackInfo
    run_dir: Path
    config_dir: Path
    secrets: RunSecrets
    # Off means off in every layer (the Python services and Traefik).
    tracing: bool
    progress: Progress

    @property
    def host(self) -> str:
        return self.settings.host

    @property
    def demo_users_file(self) -> Path:
        """Where OMNI2 writes the demo logins it seeded."""
        return self.run_dir / "demo-users.json"

    @property
    def front_gateway(self) -> bool:
        """Dashboard replicas: Traefik's front entry point takes the dashboard's address."""
        return len(self.info.dashboard_replicas) > 1

    @property
    def metrics_targets(self) -> list[str]:
        """Where Jaeger's Prometheus exporters listen: the one Jaeger, or each collector."""
        targets = [f"{self.host}:{self.ports.jaeger_metrics}"]
        if self.info.trace_pipeline == "kafka":
            targets.append(f"{self.host}:{self.ports.collector2_metrics}")
        return targets

    @property
    def otlp_authorization(self) -> str:
        """The internal path's `Authorization` header value (HTTP Basic)."""
        return "Basic " + basic_token(OTLP_USER, self.secrets.otlp_password)

    def traced_env(self) -> dict[str, str]:
        """What every traced Python process is told: where and how to export."""
        env = {
            "PYTHONUNBUFFERED": "1",
            # The internal path: the services' spans and metrics, with the run's credential.
            "OTEL_EXPORTER_OTLP_ENDPOINT": self.info.otlp_internal_endpoint,
            # A dead Jaeger must not hold a service's shutdown for long.
            "OTEL_EXPORTER_OTLP_TIMEOUT": "2",
            **self.otlp_header_env(),
        }
        if not self.tracing:
            env["OTEL_SDK_DISABLED"] = "true"
        return env

    def otlp_header_env(self) -> dict[str, str]:
        """OTEL_EXPORTER_OTLP_HEADERS for the Python services (the SDK URL-decodes it)."""
        if not sends_otlp_credential(self.settings):
            return {}
        return {"OTEL_EXPORTER_OTLP_HEADERS": f"Authorization={quote(self.otlp_authorization)}"}

    def traefik_otlp_headers(self) -> dict[str, str]:
        if sends_otlp_credential(self.settings):
            return {"Authorization": self.otlp_authorization}
        # Another collector: the headers the environment gives the services, if any.
        raw = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_HEADERS") or os.environ.get(
            "OTEL_EXPORTER_OTLP_HEADERS", ""
        )
        return dict(parse_env_headers(raw, liberal=True)) if raw else {}

    @property
    def traefik(self) -> Path:
        traefik = traefik_binary()
        if traefik is None:
            raise StackError("no traefik binary: install the project (pip install -e .)")
        return traefik


def basic_token(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()
