"""Start the whole chat stack as local processes, wait until each is really ready, stop it.

Order: Jaeger; then auth, mcp-tools, OMNI2, the dashboard and the frontend together; then
Traefik, so each service finds what it needs.
Each process writes to <run_dir>/logs/<name>.log; secrets travel in the environment only.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import importlib.util
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from string import Template
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import yaml
from opentelemetry.util.re import parse_env_headers

from omni_trace.stack.alerts import render_rules
from omni_trace.stack.environment import allowed_environment, inherited
from omni_trace.stack.jaeger_build import ensure_jaeger
from omni_trace.stack.jaeger_ui import jaeger_ui_config
from omni_trace.stack.kafka import (
    TOPIC,
    broker_command,
    broker_properties,
    ensure_kafka,
    format_storage,
)
from omni_trace.stack.paths import FRONTEND_DIST, SERVICES_DIR, traefik_binary, write_private
from omni_trace.stack.ports import Ports, is_loopback
from omni_trace.stack.postgres import PostgresServer
from omni_trace.stack.settings import StackSettings
from omni_trace.traces.audit import flow_view_url
from otel.setup import sdk_disabled

Progress = Callable[[str], None]
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


_NOT_INHERITED = frozenset(
    {
        "OTEL_SERVICE_NAME",
        "OMNI_JWT_SECRET",
        "OMNI_DASHBOARD_KEY",
        "OMNI_EDGE_KEY",
        "MCP_TOOLS_AUTH_TOKEN",
        "OMNI2_MCP_AUTH_TOKEN",
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
# The user name of the internal OTLP path's credential (the password is made per run).
OTLP_USER = "omni-trace"


class StackError(RuntimeError):
    pass


# One module of each package group the services need (the `stack` extra), as imported.
STACK_PACKAGES = {
    "fastapi": "fastapi",
    "uvicorn": "uvicorn",
    "sqlalchemy": "SQLAlchemy",
    "mcp": "mcp",
    "jwt": "PyJWT",
    "argon2": "argon2-cffi",
    "opentelemetry.instrumentation.fastapi": "opentelemetry-instrumentation-fastapi",
    "grafana_foundation_sdk": "grafana-foundation-sdk",
}


def require_stack_packages(what: str = "this command") -> None:
    """The toolkit installs without the stack's packages; running the stack needs them."""
    missing = []
    for module, package in STACK_PACKAGES.items():
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:  # its parent package is missing
            found = False
        if not found:
            missing.append(package)
    if missing:
        raise StackError(
            f"{what} runs this project's stack, whose packages are not installed "
            f"(missing: {', '.join(missing)}): pip install 'omni-trace[stack]'. Reading "
            "traces (audit, trace show, doctor --jaeger, the pytest fixtures) needs none of them."
        )


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


@dataclass
class _Service:
    name: str
    argv: list[str]
    env: dict[str, str]
    ready: Callable[[httpx.Client], bool]
    process: subprocess.Popen[bytes] | None = None


class Stack:
    """The five processes of one stack. Use as a context manager, or start()/stop()."""

    def __init__(
        self,
        run_dir: Path,
        ports: Ports | None = None,
        settings: StackSettings | None = None,
        *,
        jwt_secret: str | None = None,
        service_env: Mapping[str, Mapping[str, str]] | None = None,
        progress: Progress = print,
        tracing: bool | None = None,
        viewers: bool = True,
    ) -> None:
        """`viewers`: the flow view and Prometheus, which show the traces. The bench leaves
        them out: they are not on the chat's path, and their reads of Jaeger would load the
        stack it measures."""
        require_stack_packages("starting a stack")
        self.settings = settings or StackSettings()
        # Off means off in every layer (the Python services and Traefik); None: as
        # OTEL_SDK_DISABLED says.
        self.tracing = not sdk_disabled() if tracing is None else tracing
        self.ports = ports or Ports()
        self.run_dir = run_dir.resolve()
        self.logs_dir = self.run_dir / "logs"
        self.config_dir = self.run_dir / "config"
        # Random per run unless given: the secret never leaves the environment of the services.
        self.jwt_secret = jwt_secret or secrets.token_urlsafe(32)
        # The MCP tool server answers only OMNI2: a credential made per run, in the
        # environment of those two services only (not in the stack file).
        self.mcp_auth_token = secrets.token_urlsafe(32)
        # The keys of our two entrances to the gateway (services/common/provenance.py): the
        # dashboards' (dashboard, auth, OMNI2) and Traefik's public entry point's (Traefik,
        # auth, OMNI2). Made per run, in those environments only.
        self.dashboard_key = secrets.token_urlsafe(32)
        self.edge_key = secrets.token_urlsafe(32)
        # The flow view's access token, asked only when it binds beyond loopback (a file in
        # the 0700 config dir tells the user; Prometheus reads it from there).
        self.flowview_token = secrets.token_urlsafe(32)
        host = self.settings.host
        external = self.settings.jaeger_query_url
        # The internal OTLP path's credential, made per run and passed in the environment
        # only: to Jaeger (as a hash), to the services and to Traefik's rendered config (in
        # the 0700 config dir). Sent only to our own Jaeger: with OMNI_TRACE_JAEGER_OTLP_ENDPOINT
        # the telemetry goes elsewhere, under that collector's own rules.
        self.otlp_password = secrets.token_urlsafe(32)
        self.sends_otlp_credential = not external and not self.settings.jaeger_otlp_endpoint
        self._service_env = {k: dict(v) for k, v in (service_env or {}).items()}
        self._progress = progress
        self._services: dict[str, _Service] = {}
        kafka = self.settings.trace_pipeline == "kafka" and not external
        # The runner's PostgreSQL for OMNI2 (database=postgres), kept across restarts.
        self.postgres = (
            PostgresServer.for_run_dir(self.run_dir, self.ports.postgres, host)
            if self.settings.database == "postgres" and not self.settings.database_url
            else None
        )
        self.info = StackInfo(
            dashboard_url=f"http://{host}:{self.ports.dashboard}",
            dashboard_ws_url=f"ws://{host}:{self.ports.dashboard}/ws/chat",
            traefik_url=f"http://{host}:{self.ports.traefik}",
            traefik_ws_url=f"ws://{host}:{self.ports.traefik}/ws/chat",
            traefik_public_ws_url=f"ws://{host}:{self.ports.traefik_public}/ws/chat",
            traefik_public_url=f"http://{host}:{self.ports.traefik_public}",
            auth_url=f"http://{host}:{self.ports.auth}",
            omni2_url=f"http://{host}:{self.ports.omni2}",
            omni2_ws_url=f"ws://{host}:{self.ports.omni2}/ws/chat",
            jaeger_query_url=(external or f"http://{host}:{self.ports.jaeger_query}").rstrip("/"),
            otlp_http_endpoint=(
                self.settings.jaeger_otlp_endpoint or f"http://{host}:{self.ports.otlp_public_http}"
            ).rstrip("/"),
            otlp_internal_endpoint=(
                self.settings.jaeger_otlp_endpoint or f"http://{host}:{self.ports.otlp_http}"
            ).rstrip("/"),
            jaeger_telemetry_urls=(
                []
                if external
                else [
                    f"http://{host}:{port}/metrics"
                    for port in (self.ports.jaeger_telemetry, self.ports.collector2_telemetry)[
                        : 2 if kafka else 1
                    ]
                ]
            ),
            logs_dir=str(self.logs_dir),
            traefik_access_log=str(self.logs_dir / "traefik-access.log"),
            frontend_url=f"http://{host}:{self.ports.frontend}",
            mcp_url=f"http://{host}:{self.ports.mcp_tools}/mcp",
            flowview_url=f"http://{host}:{self.ports.flowview}" if viewers else "",
            # With the Kafka pipeline, the first collector's `jaeger` receiver.
            jaeger_thrift_compact=(
                "" if external else f"{host}:{self.ports.jaeger_thrift_compact}"
            ),
            prometheus_url=(
                f"http://{host}:{self.ports.prometheus}"
                if viewers and prometheus_binary(self.settings) and not external
                else ""
            ),
            omni2_replicas=[
                f"http://{host}:{port}"
                for port in (self.ports.omni2, self.ports.omni2_2)[: self.settings.omni2_replicas]
            ],
            dashboard_replicas=(
                [
                    f"http://{host}:{port}"
                    for port in (self.ports.dashboard_1, self.ports.dashboard_2)
                ]
                if self.settings.dashboard_replicas > 1
                else [f"http://{host}:{self.ports.dashboard}"]
            ),
            trace_pipeline="kafka" if kafka else "memory",
            kafka_brokers=f"{host}:{self.ports.kafka}" if kafka else "",
            jaeger_parts=self._jaeger_parts() if kafka else {},
            omni2_database_url=self._database_url(),
        )

    def _database_url(self) -> str:
        if self.settings.database_url:
            return self.settings.database_url.get_secret_value()
        if self.postgres is not None:
            return f"{self.postgres.base_url}/omni2"
        return f"sqlite+aiosqlite:///{self.run_dir / 'omni2.db'}"

    # -- lifecycle -------------------------------------------------------------------------

    def __enter__(self) -> Stack:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> StackInfo:
        # Private to this user: the run directory holds the database, logs and configs.
        _private_dir(self.run_dir)
        self.logs_dir.mkdir(mode=0o700, exist_ok=True)
        self.config_dir.mkdir(mode=0o700, exist_ok=True)
        try:
            if self.postgres is not None:
                self._progress("starting postgres ...")
                self.postgres.start()
                # Its password is made at each start: only now is the URL known.
                url = self.postgres.create_database("omni2")
                self.info = replace(self.info, omni2_database_url=url)
            self._services = self._plan()
            for stage in START_STAGES:
                names = [name for name in stage if name in self._services]
                started = time.monotonic()
                for name in names:  # a stage's services start together, then each must be ready
                    self._spawn(name)
                for name in names:
                    self._wait_ready(self._services[name])
                    self._progress(f"  {name} ready ({time.monotonic() - started:.1f} s)")
        except BaseException:
            self.stop()
            raise
        self.info = replace(self.info, demo_passwords=self._demo_passwords())
        return self.info

    @property
    def _demo_users_file(self) -> Path:
        return self.run_dir / "demo-users.json"

    def _demo_passwords(self) -> dict[str, str]:
        """What OMNI2 wrote to OMNI2_DEMO_USERS_FILE when it seeded its demo users."""
        try:
            found = json.loads(self._demo_users_file.read_text())
        except (OSError, ValueError):
            return {}  # seeding off (or an OMNI2 that does not write it): no demo logins
        return {str(k): str(v) for k, v in found.items()} if isinstance(found, dict) else {}

    def stop(self) -> None:
        for name in reversed(SERVICE_ORDER):
            if name in self._services:
                self.stop_service(name)
        if self.postgres is not None:
            self.postgres.stop()

    def start_service(self, name: str) -> None:
        started = time.monotonic()
        self._spawn(name)
        self._wait_ready(self._services[name])
        self._progress(f"  {name} ready ({time.monotonic() - started:.1f} s)")

    def _spawn(self, name: str) -> None:
        service = self._services[name]
        self._progress(f"starting {name} ...")
        path = self.logs_dir / f"{name}.log"
        log = os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab")
        service.process = subprocess.Popen(
            service.argv,
            env=service.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C reaches us, and we stop children in order
            umask=0o077,  # what a service creates (the SQLite database, its WAL) is 0600
        )
        log.close()

    def stop_service(self, name: str, timeout: float = 5.0) -> None:
        service = self._services.get(name)
        process = service.process if service else None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def restart_service(self, name: str, env: Mapping[str, str] | None = None) -> None:
        """Stop a service and start it again, with `env` added to its environment."""
        self.stop_service(name)
        self._services[name].env.update(env or {})
        self.start_service(name)

    def signal_service(self, name: str, signum: int) -> None:
        """Send a signal, e.g. SIGSTOP/SIGCONT to freeze a service as a hang would."""
        process = self._services[name].process
        if process is not None and process.poll() is None:
            process.send_signal(signum)

    def kill_service(self, name: str) -> None:
        """SIGKILL, as a crash would (for failure tests)."""
        process = self._services[name].process
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()

    def pids(self) -> dict[str, int]:
        """The process id of each running service."""
        return {
            name: s.process.pid
            for name, s in self._services.items()
            if s.process is not None and s.process.poll() is None
        }

    def dead_services(self) -> list[str]:
        return [
            name
            for name, s in self._services.items()
            if s.process is not None and s.process.poll() is not None
        ]

    # -- plan ------------------------------------------------------------------------------

    def _plan(self) -> dict[str, _Service]:
        p, host, info = self.ports, self.settings.host, self.info
        # What each process is told here; what it inherits from our environment (only the
        # variables it reads) is added under it at the end, by _inherit.
        base: dict[str, str] = {}
        traced = {
            **base,
            "PYTHONUNBUFFERED": "1",
            # The internal path: the services' spans and metrics, with the run's credential.
            "OTEL_EXPORTER_OTLP_ENDPOINT": info.otlp_internal_endpoint,
            # A dead Jaeger must not hold a service's shutdown for long.
            "OTEL_EXPORTER_OTLP_TIMEOUT": "2",
            **self._otlp_header_env(),
        }
        if not self.tracing:
            traced["OTEL_SDK_DISABLED"] = "true"
        # The services that issue or verify tokens; mcp-tools and the page get no JWT secret.
        python = {**traced, "OMNI_JWT_SECRET": self.jwt_secret}
        services: dict[str, _Service] = {}
        if info.trace_pipeline == "kafka":
            services.update(self._kafka_pipeline(base))
        elif not self.settings.jaeger_query_url:
            jaeger = ensure_jaeger(self._progress, self.settings.jaeger_bin)
            services["jaeger"] = _Service(
                "jaeger",
                [str(jaeger), f"--config={SERVICES_DIR / 'jaeger' / 'config.yaml'}"],
                {
                    **base,
                    **self._jaeger_paths_env(),
                    "JAEGER_OTLP_HTTP": f"{host}:{p.otlp_http}",
                    "JAEGER_OTLP_GRPC": f"{host}:{p.otlp_grpc}",
                    "JAEGER_OTLP_PUBLIC_HTTP": f"{host}:{p.otlp_public_http}",
                    "JAEGER_QUERY_HTTP": f"{host}:{p.jaeger_query}",
                    "JAEGER_QUERY_GRPC": f"{host}:{p.jaeger_query_grpc}",
                    "JAEGER_HEALTH": f"{host}:{p.jaeger_health}",
                    "JAEGER_METRICS": f"{host}:{p.jaeger_metrics}",
                    "JAEGER_TELEMETRY_HOST": host,
                    "JAEGER_TELEMETRY_PORT": str(p.jaeger_telemetry),
                    "JAEGER_THRIFT_COMPACT": info.jaeger_thrift_compact,
                    "JAEGER_UI_CONFIG": self._render_jaeger_ui_config(),
                    "JAEGER_MAX_TRACES": str(self.settings.jaeger_max_traces),
                },
                _http_ok(f"{info.jaeger_query_url}/api/services"),
            )
        services["auth"] = _Service(
            "auth",
            [sys.executable, "-m", "services.auth"],
            {**python, **self._keys(), "AUTH_HOST": host, "AUTH_PORT": str(p.auth)},
            _http_ok(f"{info.auth_url}/healthz"),
        )
        services["mcp-tools"] = _Service(
            "mcp-tools",
            [sys.executable, "-m", "services.mcp_tools"],
            {
                **traced,
                "MCP_TOOLS_HOST": host,
                "MCP_TOOLS_PORT": str(p.mcp_tools),
                "MCP_TOOLS_SAMPLE_DB": str(self.run_dir / "mcp-sample.db"),
                "MCP_TOOLS_AUTH_TOKEN": self.mcp_auth_token,
            },
            _http_ok(f"http://{host}:{p.mcp_tools}/healthz"),
        )
        replicas = self.info.omni2_replicas
        for n, url in enumerate(replicas, 1):
            name = "omni2" if n == 1 else f"omni2-{n}"
            env = {
                **python,
                "OMNI2_HOST": host,
                "OMNI2_PORT": url.rsplit(":", 1)[1],
                "OMNI2_MODEL_TOKEN_DELAY_MS": str(self.settings.model_token_delay_ms),
                "OMNI2_DATABASE_URL": info.omni2_database_url,
                "OMNI2_MCP_URL": info.mcp_url,
                "OMNI2_MCP_AUTH_TOKEN": self.mcp_auth_token,
                **self._keys(),
                "OMNI2_DEMO_USERS_FILE": str(self._demo_users_file),
            }
            if self.settings.conversation_sample_ratio is not None:
                env["OMNI2_CONVERSATION_SAMPLE_RATIO"] = str(
                    self.settings.conversation_sample_ratio
                )
            if len(replicas) > 1:  # one connection limit across the replicas
                env |= {
                    "OMNI2_CONNECTION_SLOTS": "database",
                    "OMNI2_REPLICA_ID": name,
                    "OTEL_RESOURCE_ATTRIBUTES": f"service.instance.id={name}",
                }
            services[name] = _Service(
                name, [sys.executable, "-m", "services.omni2"], env, _http_ok(f"{url}/healthz")
            )
        services["traefik"] = _Service(
            "traefik",
            [str(self._traefik), f"--configFile={self._render_traefik_config()}"],
            {
                # Traefik's SDK exports every 5 s by default, which held a whole chain back
                # by up to 5 s (docs/performance.md); the services' delay is 200 ms too. The
                # environment's own value wins.
                "OTEL_BSP_SCHEDULE_DELAY": os.environ.get("OTEL_BSP_SCHEDULE_DELAY", "200"),
                "OMNI2_AUTH_VERIFY_URL": f"{info.auth_url}/verify",
                "OMNI2_BACKEND_URLS": ",".join(info.omni2_replicas),
                # The public entry point adds the edge key and hands over to `web`.
                "OMNI_EDGE_KEY": self.edge_key,
                "TRAEFIK_WEB_URL": info.traefik_url,
                "DASHBOARD_BACKEND_URLS": (
                    ",".join(info.dashboard_replicas) if self._front_gateway else ""
                ),
            },
            # Readiness is a request through the real route: 401 means the router is loaded
            # and ForwardAuth reached the auth service (404 = routes not loaded yet); the
            # front route, when there is one, reaches a dashboard.
            _all_ready(
                _http_status(f"{info.traefik_url}/ws/chat", 401),
                # ... and the public entry point's, through the gateway entry point.
                _http_status(f"{info.traefik_public_url}/ws/chat", 401),
                *([_http_ok(f"{info.dashboard_url}/healthz")] if self._front_gateway else []),
            ),
        )
        dashboards = info.dashboard_replicas
        for n, url in enumerate(dashboards, 1):
            name = "dashboard" if n == 1 else f"dashboard-{n}"
            env = {
                **python,
                "DASHBOARD_HOST": host,
                "DASHBOARD_PORT": url.rsplit(":", 1)[1],
                "DASHBOARD_UPSTREAM_WS_URL": info.traefik_ws_url,
                "OMNI_DASHBOARD_KEY": self.dashboard_key,
                # Logins read users from OMNI2's database; refusals are written to it.
                "DASHBOARD_DATABASE_URL": info.omni2_database_url,
                "DASHBOARD_ALLOWED_ORIGINS": json.dumps([info.frontend_url]),
            }
            if len(dashboards) > 1:  # behind Traefik's front entry point
                env |= {
                    "DASHBOARD_BEHIND_GATEWAY": "true",
                    # X-Forwarded-For only from Traefik, which reaches a replica on its own
                    # address (a client that reaches a replica's port directly is counted on
                    # its address, whatever header it wrote).
                    "DASHBOARD_TRUSTED_PROXIES": json.dumps([host]),
                    # Failed logins counted once across the replicas, in the database.
                    "DASHBOARD_LOGIN_LIMITS": "database",
                    "OTEL_RESOURCE_ATTRIBUTES": f"service.instance.id={name}",
                }
            services[name] = _Service(
                name,
                [sys.executable, "-m", "services.dashboard"],
                env,
                _http_ok(f"{url}/healthz"),
            )
        services["frontend"] = _Service(
            "frontend",
            [sys.executable, "-m", "services.frontend"],
            {
                **traced,
                "FRONTEND_HOST": host,
                "FRONTEND_PORT": str(p.frontend),
                "FRONTEND_DASHBOARD_URL": info.dashboard_url,
                "FRONTEND_CHAT_WS_URL": info.dashboard_ws_url,
                # The page runs in a browser: it exports to the public path.
                "FRONTEND_OTLP_TRACES_URL": f"{info.otlp_http_endpoint}/v1/traces",
                "FRONTEND_JAEGER_QUERY_URL": info.jaeger_query_url,
                "FRONTEND_TRACE_URL_TEMPLATE": self._trace_link(),
            },
            _http_ok(f"{info.frontend_url}/healthz"),
        )
        prometheus = prometheus_binary(self.settings)
        if info.prometheus_url and prometheus:
            services["prometheus"] = _Service(
                "prometheus",
                [
                    prometheus,
                    f"--config.file={self._render_prometheus_config()}",
                    f"--storage.tsdb.path={self.run_dir / 'prometheus'}",
                    f"--web.listen-address={host}:{p.prometheus}",
                    "--log.level=warn",
                ],
                dict(base),
                _http_ok(f"{info.prometheus_url}/-/ready"),
            )
        elif info.flowview_url and not prometheus:
            self._progress(
                "note: no Prometheus (Debian's prometheus package; scripts/bootstrap installs "
                "it): the flow view works without its hop chart"
            )
        if info.flowview_url:
            services["flowview"] = _Service(
                "flowview",
                [sys.executable, "-m", "omni_trace.flowview"],
                {
                    **base,
                    "PYTHONUNBUFFERED": "1",
                    "FLOWVIEW_HOST": host,
                    "FLOWVIEW_PORT": str(p.flowview),
                    "FLOWVIEW_JAEGER_QUERY_URL": info.jaeger_query_url,
                    "FLOWVIEW_PROMETHEUS_URL": info.prometheus_url,
                    **self._flowview_access(),
                },
                _http_ok(f"{info.flowview_url}/healthz"),
            )
        if not (FRONTEND_DIST / "index.html").is_file():
            self._progress(
                f"warning: the chat page is not built ({FRONTEND_DIST}); run scripts/bootstrap"
            )
        for name, service in services.items():
            service.env = {**self._inherit(name), **service.env}
        for name, extra in self._service_env.items():
            services[name].env.update(extra)
        return services

    def _inherit(self, name: str) -> dict[str, str]:
        """What a process inherits from our environment: only the variables it reads
        (omni_trace/stack/environment.py), never the secrets we make (given where they are
        used) nor, with our own Jaeger, a shell's OTLP header that would replace our
        credential."""
        refused = _NOT_INHERITED | (_OTLP_HEADER_VARIABLES if self.sends_otlp_credential else set())
        found = inherited(allowed_environment(name))
        return {k: v for k, v in found.items() if k.upper() not in refused}

    def _flowview_access(self) -> dict[str, str]:
        """Off loopback the flow view asks for a token (it refuses to start without one)."""
        if is_loopback(self.settings.host):
            return {}
        self._progress(f"flow view: its access token is in {self._flowview_token_file()}")
        return {"FLOWVIEW_ACCESS_TOKEN": self.flowview_token}

    def _flowview_token_file(self) -> Path:
        path = self.config_dir / "flowview-token"
        write_private(path, self.flowview_token)
        return path

    def _keys(self) -> dict[str, str]:
        """Both entrance keys, for the services that tell the entrances apart."""
        return {"OMNI_DASHBOARD_KEY": self.dashboard_key, "OMNI_EDGE_KEY": self.edge_key}

    def _trace_link(self) -> str:
        """Where the chat page's trace links lead: a configured Jaeger's UI, else the flow
        view (the Jaeger built here has no web UI), else Jaeger's JSON."""
        if self.settings.jaeger_query_url:
            return "{jaeger_query_url}/trace/{trace_id}"
        if self.info.flowview_url:
            return flow_view_url(self.info.flowview_url, "{trace_id}")
        return "{jaeger_query_url}/api/traces/{trace_id}"

    @property
    def _traefik(self) -> Path:
        traefik = traefik_binary()
        if traefik is None:
            raise StackError("no traefik binary: install the project (pip install -e .)")
        return traefik

    @property
    def _front_gateway(self) -> bool:
        """Dashboard replicas: Traefik's front entry point takes the dashboard's address."""
        return len(self.info.dashboard_replicas) > 1

    def _render_traefik_config(self) -> Path:
        template = (SERVICES_DIR / "traefik" / "traefik.yml").read_text()
        config = yaml.safe_load(
            Template(template).substitute(
                TRAEFIK_ADDRESS=f"{self.settings.host}:{self.ports.traefik}",
                TRAEFIK_PUBLIC_ADDRESS=f"{self.settings.host}:{self.ports.traefik_public}",
                TRAEFIK_DYNAMIC_FILE=str(SERVICES_DIR / "traefik" / "dynamic.yml"),
                TRAEFIK_ACCESS_LOG=self.info.traefik_access_log,
                TRAEFIK_OTLP_TRACES_URL=f"{self.info.otlp_internal_endpoint}/v1/traces",
            )
        )
        if not self.tracing:
            del config["tracing"]  # "off" means off in every layer
        elif headers := self._traefik_otlp_headers():
            # Traefik's exporter ignores OTEL_EXPORTER_OTLP_HEADERS (it sets its own headers,
            # `tracing.otlp.http.headers`, which replace the environment's), so the credential
            # goes in this rendered copy (0600, in the 0700 config dir; Traefik logs its static
            # configuration only at DEBUG, and without the headers).
            config["tracing"]["otlp"]["http"]["headers"] = headers
        if self._front_gateway:
            # The same entry point as the gateway's, on the dashboard's public address.
            front = dict(config["entryPoints"]["web"])
            front["address"] = f"{self.settings.host}:{self.ports.dashboard}"
            config["entryPoints"]["front"] = front
        path = self.config_dir / "traefik.yml"
        write_private(path, yaml.safe_dump(config, sort_keys=False))
        return path

    # -- the two telemetry paths -----------------------------------------------------------

    @property
    def otlp_authorization(self) -> str:
        """The internal path's `Authorization` header value (HTTP Basic)."""
        return "Basic " + _basic_token(OTLP_USER, self.otlp_password)

    def _otlp_header_env(self) -> dict[str, str]:
        """OTEL_EXPORTER_OTLP_HEADERS for the Python services (the SDK URL-decodes it)."""
        if not self.sends_otlp_credential:
            return {}
        return {"OTEL_EXPORTER_OTLP_HEADERS": f"Authorization={quote(self.otlp_authorization)}"}

    def _traefik_otlp_headers(self) -> dict[str, str]:
        if self.sends_otlp_credential:
            return {"Authorization": self.otlp_authorization}
        # Another collector: the headers the environment gives the services, if any.
        raw = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_HEADERS") or os.environ.get(
            "OTEL_EXPORTER_OTLP_HEADERS", ""
        )
        return dict(parse_env_headers(raw, liberal=True)) if raw else {}

    def _jaeger_paths_env(self) -> dict[str, str]:
        """What every Jaeger process with the two paths (the one Jaeger, each collector) is
        told: the credential's hash, the chat page's origin, the services each path takes."""
        return {
            "JAEGER_OTLP_HTPASSWD": _htpasswd_line(OTLP_USER, self.otlp_password),
            # The chat page exports its spans to the public path: only its origin may.
            "JAEGER_CORS_ORIGIN": self.info.frontend_url,
            "JAEGER_PUBLIC_SERVICES": ",".join(self.settings.public_trace_services),
            "JAEGER_LEGACY_SERVICES": ",".join(self.settings.legacy_trace_services),
        }

    def _jaeger_parts(self) -> dict[str, str]:
        host, p = self.settings.host, self.ports
        health = {
            "jaeger-collector-1": p.jaeger_health,
            "jaeger-collector-2": p.collector2_health,
            "jaeger-ingester-1": p.ingester1_health,
            "jaeger-ingester-2": p.ingester2_health,
            "jaeger-storage": p.jaeger_storage_health,
            "jaeger-query": p.jaeger_query_health,
        }
        return {name: f"http://{host}:{port}/status" for name, port in health.items()}

    def _kafka_pipeline(self, base: dict[str, str]) -> dict[str, _Service]:
        """Kafka and Jaeger's scale-out roles, all from the one Jaeger binary."""
        host, p, info = self.settings.host, self.ports, self.info
        jaeger = str(ensure_jaeger(self._progress, self.settings.jaeger_bin))
        libs = ensure_kafka(self._progress)
        data = self.run_dir / "kafka"
        config = self.config_dir / "kafka.properties"
        config.write_text(broker_properties(data, host, p.kafka, p.kafka_controller))
        format_storage(libs, config, data)
        shared = {
            **base,
            "KAFKA_BROKERS": info.kafka_brokers,
            "KAFKA_TOPIC": TOPIC,
            "JAEGER_REMOTE_STORAGE": f"{host}:{p.jaeger_storage}",
            "JAEGER_STORAGE_WRITER": f"{host}:{p.jaeger_storage_writer}",
        }
        scale = SERVICES_DIR / "jaeger" / "scale"

        parts = info.jaeger_parts

        def role(
            name: str,
            *configs: str,
            ready: Callable[[httpx.Client], bool] | None = None,
            **env: str,
        ) -> _Service:
            """A Jaeger process in one role (its configs merged, later ones over earlier);
            ready when its health check (or `ready`) says."""
            health = parts[name]
            return _Service(
                name,
                [jaeger, *(f"--config={scale / config}" for config in configs)],
                {**shared, "JAEGER_HEALTH": urlsplit(health).netloc, **env},
                ready or _http_ok(health),
            )

        services = {
            "kafka": _Service(
                "kafka", broker_command(libs, config), dict(base), _tcp_open(host, p.kafka)
            ),
            "jaeger-storage": role(
                "jaeger-storage",
                "storage.yaml",
                JAEGER_BADGER_DIR=str(self.run_dir / "jaeger-badger"),
            ),
            # Ready once it answers a search: the storage behind it is reachable.
            "jaeger-query": role(
                "jaeger-query",
                "query.yaml",
                ready=_http_ok(f"{info.jaeger_query_url}/api/services"),
                JAEGER_QUERY_HTTP=f"{host}:{p.jaeger_query}",
                JAEGER_QUERY_GRPC=f"{host}:{p.jaeger_query_grpc}",
            ),
        }
        sampling = self.settings.conversation_sample_ratio is not None
        for n in (1, 2):
            services[f"jaeger-ingester-{n}"] = role(
                f"jaeger-ingester-{n}",
                "ingester.yaml",
                *(["tail-sampling.yaml"] if sampling else []),
                JAEGER_TAIL_DECISION_WAIT=f"{self.settings.tail_sampling_wait_s:g}s",
                JAEGER_SLOW_FIRST_TOKEN_MS=f"{self.settings.slow_first_token_ms:g}",
            )
            # The receiver's franz-go consumer can stop for good when its group session
            # fails while the broker is away (twmb/franz-go#1173; seen in
            # test_scale_faults): the Sarama consumer rejoins.
            services[f"jaeger-ingester-{n}"].argv.append(
                "--feature-gates=-receiver.kafkareceiver.UseFranzGo"
            )
        # Each collector: (internal OTLP/HTTP, OTLP/gRPC, public OTLP/HTTP, UDP, telemetry).
        otlp = {
            1: (
                p.collector1_otlp_http,
                p.otlp_grpc,
                p.collector1_otlp_public_http,
                p.jaeger_thrift_compact,
                p.jaeger_telemetry,
            ),
            2: (
                p.collector2_otlp_http,
                p.collector2_otlp_grpc,
                p.collector2_otlp_public_http,
                p.collector2_thrift_compact,
                p.collector2_telemetry,
            ),
        }
        for n, (http, grpc, public, thrift, telemetry) in otlp.items():
            services[f"jaeger-collector-{n}"] = collector = role(
                f"jaeger-collector-{n}",
                "collector.yaml",
                JAEGER_OTLP_HTTP=f"{host}:{http}",
                JAEGER_OTLP_GRPC=f"{host}:{grpc}",
                JAEGER_OTLP_PUBLIC_HTTP=f"{host}:{public}",
                JAEGER_METRICS=self._metrics_targets[n - 1],
                JAEGER_TELEMETRY_HOST=host,
                JAEGER_TELEMETRY_PORT=str(telemetry),
                JAEGER_THRIFT_COMPACT=f"{host}:{thrift}",
            )
            collector.env.update(self._jaeger_paths_env())  # the two paths' settings
        services["otlp-balancer"] = _Service(
            "otlp-balancer",
            [str(self._traefik), f"--configFile={self._render_otlp_balancer_config()}"],
            {
                **base,
                "OTLP_COLLECTOR_URLS": ",".join(f"http://{host}:{c[0]}" for c in otlp.values()),
                "OTLP_COLLECTOR_PUBLIC_URLS": ",".join(
                    f"http://{host}:{c[2]}" for c in otlp.values()
                ),
            },
            # The collectors' answers to a GET through both routes (the public receiver's
            # 405, the internal one's 401: it asks for the credential): loaded, and one is up.
            _all_ready(
                _http_status(f"{info.otlp_http_endpoint}/v1/traces", 405),
                _http_status(f"{info.otlp_internal_endpoint}/v1/traces", 401),
            ),
        )
        return services

    def _render_otlp_balancer_config(self) -> Path:
        template = (SERVICES_DIR / "traefik" / "otlp-balancer.yml").read_text()
        path = self.config_dir / "otlp-balancer.yml"
        path.write_text(
            Template(template).substitute(
                OTLP_BALANCER_ADDRESS=f"{self.settings.host}:{self.ports.otlp_http}",
                OTLP_BALANCER_PUBLIC_ADDRESS=f"{self.settings.host}:{self.ports.otlp_public_http}",
                OTLP_BALANCER_DYNAMIC_FILE=str(
                    SERVICES_DIR / "traefik" / "otlp-balancer-dynamic.yml"
                ),
            )
        )
        return path

    def _render_jaeger_ui_config(self) -> str:
        """The UI's links to the flow view; empty (no UI configuration) without one."""
        if not self.info.flowview_url:
            return ""
        path = self.config_dir / "jaeger-ui.json"
        path.write_text(json.dumps(jaeger_ui_config(self.info.flowview_url), indent=2))
        return str(path)

    @property
    def _metrics_targets(self) -> list[str]:
        """Where Jaeger's Prometheus exporters listen: the one Jaeger, or each collector."""
        host, p = self.settings.host, self.ports
        targets = [f"{host}:{p.jaeger_metrics}"]
        if self.info.trace_pipeline == "kafka":
            targets.append(f"{host}:{p.collector2_metrics}")
        return targets

    def _render_prometheus_config(self) -> Path:
        """Prometheus scrapes Jaeger's metrics (each collector's, with the Kafka pipeline) and
        the flow view's audit (services/prometheus/prometheus.yml)."""
        template = (SERVICES_DIR / "prometheus" / "prometheus.yml").read_text()
        # Each Jaeger process's span metrics, then its own telemetry (the refused spans).
        targets = self._metrics_targets
        telemetry = [urlsplit(url).netloc for url in self.info.jaeger_telemetry_urls]
        config = yaml.safe_load(
            Template(template).substitute(
                JAEGER_METRICS=targets[0],
                JAEGER_TELEMETRY=telemetry[0],
                FLOWVIEW=f"{self.settings.host}:{self.ports.flowview}",
                ALERT_RULES=str(self._render_alert_rules()),
            )
        )
        (jaeger,) = (job for job in config["scrape_configs"] if job["job_name"] == "jaeger")
        jaeger["static_configs"] = [{"targets": targets + telemetry}]
        if not is_loopback(self.settings.host):
            (flowview,) = (job for job in config["scrape_configs"] if job["job_name"] == "flowview")
            flowview["authorization"] = {"credentials_file": str(self._flowview_token_file())}
        path = self.config_dir / "prometheus.yml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    def _render_alert_rules(self) -> Path:
        """Prometheus' alerting rules with the settings' budgets (omni_trace/stack/alerts.py)."""
        path = self.config_dir / "alerts.yml"
        path.write_text(render_rules(self.settings))
        return path

    def _wait_ready(self, service: _Service) -> None:
        deadline = time.monotonic() + self.settings.ready_timeout_s
        assert service.process is not None
        with httpx.Client(timeout=2.0) as client:
            while time.monotonic() < deadline:
                code = service.process.poll()
                if code is not None:
                    raise StackError(
                        f"{service.name} exited with code {code} while starting; "
                        f"last lines of its log:\n{self.log_tail(service.name)}"
                    )
                try:
                    if service.ready(client):
                        return
                except httpx.HTTPError:
                    pass
                time.sleep(0.1)
        raise StackError(
            f"{service.name} not ready after {self.settings.ready_timeout_s:.0f} s; "
            f"last lines of its log:\n{self.log_tail(service.name)}"
        )

    def log_tail(self, name: str, lines: int = 20) -> str:
        path = self.logs_dir / f"{name}.log"
        if not path.exists():
            return "(no log)"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def _basic_token(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


def _htpasswd_line(user: str, password: str) -> str:
    """An htpasswd line Jaeger's basicauth reads: `{SHA}`, one SHA-1 per request compared in
    constant time (bcrypt would cost milliseconds of CPU per export; the password is a random
    32-byte token, so a fast hash gives nothing away). Jaeger's environment holds no password."""
    digest = base64.b64encode(hashlib.sha1(password.encode()).digest()).decode()
    return f"{user}:{{SHA}}{digest}"


def _private_dir(path: Path) -> None:
    """Made 0700, or, when it exists, this user's own (then made 0700): a directory another
    user made first at a shared path would see every config and credential written into it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=0o700)
    # O_NOFOLLOW: the checks and the chmod apply to the directory itself, not a symlink's target.
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        owner = os.fstat(fd).st_uid
        if owner != os.geteuid():
            raise StackError(
                f"the run directory {path} is not owned by this user (uid {owner}): refusing "
                "to write this stack's configs and credentials there; remove it or pass "
                "another --run-dir"
            )
        os.fchmod(fd, 0o700)
    finally:
        os.close(fd)


def prometheus_binary(settings: StackSettings) -> str | None:
    """OMNI_TRACE_PROMETHEUS_BIN, or Debian's Prometheus (the `prometheus` package)."""
    return str(settings.prometheus_bin) if settings.prometheus_bin else shutil.which("prometheus")


def _http_ok(url: str) -> Callable[[httpx.Client], bool]:
    return lambda client: client.get(url).status_code == 200


def _tcp_open(host: str, port: int) -> Callable[[httpx.Client], bool]:
    def ready(_: httpx.Client) -> bool:
        try:
            socket.create_connection((host, port), timeout=1).close()
        except OSError:
            return False
        return True

    return ready


def _http_status(url: str, status: int) -> Callable[[httpx.Client], bool]:
    return lambda client: client.get(url).status_code == status


def _all_ready(*checks: Callable[[httpx.Client], bool]) -> Callable[[httpx.Client], bool]:
    return lambda client: all(check(client) for check in checks)


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
