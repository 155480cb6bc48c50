"""Each process of a running stack holds only the secrets it uses, in its environment, and no
command line holds any (README.md, "Security"): read from /proc, as any local process could read
the command lines and as the stack's user could read the environments."""

from __future__ import annotations

import base64
import secrets
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from omni_trace.stack import Stack
from omni_trace.stack.environment import allowed_environment
from omni_trace.stack.ports import Ports
from omni_trace.stack.runner import OTLP_USER
from omni_trace.stack.settings import StackSettings
from tests.whole_stack.conftest import running_stack

# Starts stacks of its own (or runs for long): not in `scripts/test --quick`.
pytestmark = pytest.mark.slow

# In the runner's environment, as in the shell of whoever runs `omni-trace up`.
PROVIDER_MARKER = "marker-some-provider-key-" + secrets.token_hex(8)
OMNI2_KEY_MARKER = "marker-omni2-anthropic-key-" + secrets.token_hex(8)
CLOUD_MARKER = "marker-cloud-secret-" + secrets.token_hex(8)
SHELL = {
    "SOME_PROVIDER_API_KEY": PROVIDER_MARKER,  # read by nobody: reaches nobody
    "OMNI2_ANTHROPIC_API_KEY": OMNI2_KEY_MARKER,  # read by OMNI2 (its settings): OMNI2 only
    "AWS_SECRET_ACCESS_KEY": CLOUD_MARKER,
}
# Who may hold what; the traced Python services export with the internal OTLP credential.
TRACED = {"auth", "mcp-tools", "omni2", "dashboard", "frontend"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with pytest.MonkeyPatch.context() as env:
        for name, value in SHELL.items():
            env.setenv(name, value)
        run_dir = tmp_path_factory.mktemp("least-privilege")
        # PostgreSQL: the database URL then holds a password.
        with running_stack(run_dir, secrets.token_urlsafe(32), database="postgres") as stack:
            yield stack


def _read(pid: int) -> tuple[str, str]:
    environ = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    return environ, cmdline


def _secrets(stack: Stack) -> dict[str, tuple[str, set[str]]]:
    """Each secret of the run, and the processes that may hold it in their environment."""
    password = urlsplit(stack.info.omni2_database_url).password
    assert password, "the runner's PostgreSQL asks for a password"
    otlp_token = base64.b64encode(f"{OTLP_USER}:{stack.otlp_password}".encode()).decode()
    return {
        "JWT secret": (stack.jwt_secret, {"auth", "omni2", "dashboard"}),
        "dashboard key": (stack.dashboard_key, {"auth", "omni2", "dashboard"}),
        "edge key": (stack.edge_key, {"auth", "omni2", "traefik"}),
        "MCP token": (stack.mcp_auth_token, {"mcp-tools", "omni2"}),
        "Jaeger credential": (otlp_token, TRACED),
        "Jaeger password": (stack.otlp_password, set()),
        "database password": (password, {"omni2", "dashboard"}),
        "unread provider key": (PROVIDER_MARKER, set()),
        "OMNI2's provider key": (OMNI2_KEY_MARKER, {"omni2"}),
        "cloud secret": (CLOUD_MARKER, set()),
    }


def test_each_process_holds_only_the_secrets_it_uses(stack: Stack) -> None:
    pids = stack.pids()
    assert {"jaeger", "auth", "mcp-tools", "omni2", "dashboard", "traefik"} <= set(pids)
    assert stack.postgres is not None
    postmaster = int((stack.postgres.data / "postmaster.pid").read_text().split()[0])
    processes = {**pids, "postgres": postmaster}
    found: list[str] = []
    for name, pid in sorted(processes.items()):
        environ, cmdline = _read(pid)
        for what, (value, holders) in _secrets(stack).items():
            if value in cmdline:
                found.append(f"{name} has the {what} on its command line")
            if value in environ and name not in holders:
                found.append(f"{name} has the {what} in its environment")
            if value not in environ and name in holders:
                found.append(f"{name} lacks the {what} it uses")
    assert found == []


def test_what_a_process_inherits_is_only_what_it_reads(stack: Stack) -> None:
    """Every variable of each process is one it reads (its settings class, its config
    files), a standard OTEL_* one, or one a process needs to run (PATH, HOME, locale...)."""
    extra: dict[str, list[str]] = {}
    for name, pid in stack.pids().items():
        environ, _ = _read(pid)
        names = [entry.split("=", 1)[0] for entry in environ.split("\0") if entry]
        allowed = allowed_environment(name)
        unread = [n for n in names if not allowed.admits(n)]
        if unread:
            extra[name] = unread
    assert extra == {}


def test_the_plan_gives_no_process_a_variable_it_does_not_read(tmp_path: Path) -> None:
    """The same for every process of the scale-out profile (Kafka, the pipeline's Jaeger
    roles, the replicas), from the runner's plan, with a hostile shell."""
    settings = StackSettings(trace_pipeline="kafka", omni2_replicas=2, dashboard_replicas=2)
    with pytest.MonkeyPatch.context() as env:
        for name, value in SHELL.items():
            env.setenv(name, value)
        stack = Stack(tmp_path, Ports.free(), settings, progress=lambda _: None)
        stack.config_dir.mkdir(parents=True)
        plan = stack._plan()
    assert {"kafka", "jaeger-collector-2", "omni2-2", "dashboard-2"} <= set(plan)
    for name, service in plan.items():
        allowed = allowed_environment(name)
        assert [k for k in service.env if not allowed.admits(k)] == [], name
        held = {value for value in service.env.values()}
        assert PROVIDER_MARKER not in held and CLOUD_MARKER not in held, name
        assert (OMNI2_KEY_MARKER in held) is name.startswith("omni2"), name
        assert ("OMNI_JWT_SECRET" in service.env) is (
            name.startswith(("omni2", "dashboard")) or name == "auth"
        ), name
