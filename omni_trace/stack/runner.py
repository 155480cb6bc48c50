"""Start the stack's processes as the plan gives them (omni_trace/stack/plan/), in its order;
wait until each is really ready; watch, restart and stop them.

Up to 19 processes: Jaeger (or the Kafka trace pipeline's eight parts), auth, mcp-tools,
OMNI2 and the dashboard (one or two each), the chat page's server, Traefik, and the viewers
(Prometheus, the flow view). Each writes to <run_dir>/logs/<name>.log; secrets travel in the
environment only.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import subprocess
import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import httpx

from omni_trace.stack import configs
from omni_trace.stack.errors import StackError
from omni_trace.stack.info import StackInfo, stack_summary
from omni_trace.stack.plan.addresses import plan_info, prometheus_binary
from omni_trace.stack.plan.process import Process
from omni_trace.stack.plan.processes import SERVICE_ORDER, START_STAGES, plan_processes
from omni_trace.stack.plan.run import (
    OTLP_USER,
    Progress,
    Run,
    RunSecrets,
    sends_otlp_credential,
)
from omni_trace.stack.ports import Ports
from omni_trace.stack.postgres import PostgresServer
from omni_trace.stack.settings import StackSettings
from otel.setup import sdk_disabled

# Re-exported: the names this module gave before the plan and StackInfo had their own.
__all__ = [
    "OTLP_USER",
    "Stack",
    "StackError",
    "StackInfo",
    "prometheus_binary",
    "require_stack_packages",
    "stack_summary",
]


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


class Stack:
    """The processes of one stack (see the module's docstring). Use as a context manager, or
    start()/stop()."""

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
        # Random per run (the JWT secret unless given), each in the environment of the
        # processes that use it only (plan/run.py says which).
        self.secrets = RunSecrets.make(jwt_secret)
        self.jwt_secret = self.secrets.jwt_secret
        self.mcp_auth_token = self.secrets.mcp_auth_token
        self.dashboard_key = self.secrets.dashboard_key
        self.edge_key = self.secrets.edge_key
        self.flowview_token = self.secrets.flowview_token
        self.otlp_password = self.secrets.otlp_password
        self.sends_otlp_credential = sends_otlp_credential(self.settings)
        self._service_env = {k: dict(v) for k, v in (service_env or {}).items()}
        self._progress = progress
        self._services: dict[str, Process] = {}
        # The runner's PostgreSQL for OMNI2 (database=postgres), kept across restarts.
        self.postgres = (
            PostgresServer.for_run_dir(self.run_dir, self.ports.postgres, self.settings.host)
            if self.settings.database == "postgres" and not self.settings.database_url
            else None
        )
        self.info = plan_info(
            self.settings,
            self.ports,
            self.logs_dir,
            viewers=viewers,
            database_url=self._database_url(),
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

    def _demo_passwords(self) -> dict[str, str]:
        """What OMNI2 wrote to OMNI2_DEMO_USERS_FILE when it seeded its demo users."""
        try:
            found = json.loads(self._run().demo_users_file.read_text())
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

    def _run(self) -> Run:
        """What the plan's builders read, as this stack stands (its addresses change once the
        PostgreSQL server has made its password)."""
        return Run(
            settings=self.settings,
            ports=self.ports,
            info=self.info,
            run_dir=self.run_dir,
            config_dir=self.config_dir,
            secrets=self.secrets,
            tracing=self.tracing,
            progress=self._progress,
        )

    def _plan(self) -> dict[str, Process]:
        return plan_processes(self._run(), self._service_env)

    def _render_traefik_config(self) -> Path:
        return configs.traefik_config(self._run())

    def _render_prometheus_config(self) -> Path:
        return configs.prometheus_config(self._run())

    @property
    def otlp_authorization(self) -> str:
        """The internal path's `Authorization` header value (HTTP Basic)."""
        return self._run().otlp_authorization

    def _wait_ready(self, service: Process) -> None:
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
