"""The two telemetry paths as the runner plans them and as the Jaeger configs say them: the
credential only in the environment of our processes (a hash of it for Jaeger), the clients and
the chat page on the public path, the services and Traefik on the internal one, and the same
filters in the one-process Jaeger, the Kafka pipeline's collectors and the cluster's."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
import yaml

from omni_trace.stack import Stack, StackInfo, stack_summary
from omni_trace.stack.ports import JAEGER_PORTS, PIPELINE_PORTS, Ports
from omni_trace.stack.runner import OTLP_USER
from omni_trace.stack.settings import StackSettings
from otel.names import CLIENTS

ROOT = Path(__file__).resolve().parents[3]
CONFIGS = {
    "one Jaeger": ROOT / "config" / "jaeger" / "config.yaml",
    "Kafka collector": ROOT / "config" / "jaeger" / "scale" / "collector.yaml",
}


def _cluster_collector() -> dict[str, Any]:
    path = ROOT / "deploy" / "kubernetes" / "20-jaeger-config.yaml"
    (config_map,) = [d for d in yaml.safe_load_all(path.read_text()) if d["kind"] == "ConfigMap"]
    return dict(yaml.safe_load(config_map["data"]["collector.yaml"]))


def _configs() -> dict[str, dict[str, Any]]:
    found = {name: dict(yaml.safe_load(p.read_text())) for name, p in CONFIGS.items()}
    return found | {"cluster collector": _cluster_collector()}


def _plan(tmp_path: Path, **settings: Any) -> Stack:
    stack = Stack(tmp_path, Ports(), StackSettings(**settings), progress=lambda _: None)
    stack.config_dir.mkdir(parents=True, exist_ok=True)
    return stack


# -- the configs ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["one Jaeger", "Kafka collector", "cluster collector"])
def test_every_config_has_the_two_paths(name: str) -> None:
    config = _configs()[name]
    receivers = config["receivers"]
    internal, public = receivers["otlp"]["protocols"], receivers["otlp/public"]["protocols"]
    # The internal path: the credential on both protocols, no browser.
    for protocol in ("grpc", "http"):
        assert internal[protocol]["auth"] == {"authenticator": "basicauth/internal"}
    assert "cors" not in internal["http"]
    assert config["extensions"]["basicauth/internal"] == {
        "htpasswd": {"inline": "${env:JAEGER_OTLP_HTPASSWD}"}
    }
    assert "basicauth/internal" in config["service"]["extensions"]
    # The public path: HTTP only, bounded, the page's origin, no credential asked.
    assert set(public) == {"http"} and "auth" not in public["http"]
    assert public["http"]["max_request_body_size"] == 1 << 20
    assert public["http"]["cors"] == {"allowed_origins": ["${env:JAEGER_CORS_ORIGIN}"]}
    pipelines = config["service"]["pipelines"]
    by_receiver = {r: n for n, p in pipelines.items() for r in p["receivers"]}
    assert by_receiver["otlp/public"] == "traces/public"  # no metrics pipeline: 404
    assert [n for n, p in pipelines.items() if "otlp/public" in p["receivers"]] == ["traces/public"]
    assert pipelines["traces/public"]["processors"][:2] == ["filter/public", "attributes/public"]
    assert pipelines["traces/legacy"]["receivers"] == ["jaeger"]
    assert pipelines["traces/legacy"]["processors"][0] == "filter/legacy"
    assert "jaeger" not in pipelines["traces"]["receivers"]
    assert config["processors"]["attributes/public"] == {
        "actions": [{"key": "chat.telemetry.path", "value": "public", "action": "upsert"}]
    }
    for name in ("filter/public", "filter/legacy"):
        assert config["processors"][name]["error_mode"] == "propagate"  # fail closed
    # The refused-span count: the collector's own metrics, on their own port.
    metrics = config["service"]["telemetry"]["metrics"]
    assert metrics["level"] == "basic"
    (reader,) = metrics["readers"]
    assert reader["pull"]["exporter"]["prometheus"] == {
        "host": "${env:JAEGER_TELEMETRY_HOST}",
        "port": "${env:JAEGER_TELEMETRY_PORT}",
    }


def test_the_filters_are_the_same_everywhere() -> None:
    configs = _configs()
    first = configs["one Jaeger"]["processors"]
    for name, config in configs.items():
        processors = config["processors"]
        for key in ("filter/public", "filter/legacy", "attributes/public"):
            assert processors[key] == first[key], (name, key)
        assert config["connectors"]["spanmetrics"]["aggregation_cardinality_limit"] == 1000


def test_the_configs_default_to_the_runners_client_services() -> None:
    """Run by hand (no JAEGER_PUBLIC_SERVICES), the configs take the same names as the
    runner passes by default."""
    text = CONFIGS["one Jaeger"].read_text()
    default = ",".join(sorted(CLIENTS))
    assert f"${{env:JAEGER_PUBLIC_SERVICES:-{default}}}" in text
    assert set(StackSettings().public_trace_services) == set(CLIENTS)
    assert "${env:JAEGER_LEGACY_SERVICES:-usage-ledger}" in text
    assert StackSettings().legacy_trace_services == ("usage-ledger",)


# -- the settings ------------------------------------------------------------------------------


def test_the_allowed_services_are_a_comma_separated_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OMNI_TRACE_PUBLIC_TRACE_SERVICES", "acme-web, chat-client")
    assert StackSettings().public_trace_services == ("acme-web", "chat-client")
    for bad in ("", 'a"b', "a,b c", "x" * 129, "${env:X}"):
        with pytest.raises(ValueError):
            StackSettings.model_validate({"public_trace_services": bad})


def test_the_new_ports_are_planned_and_checked() -> None:
    ports = Ports()
    assert (ports.otlp_public_http, ports.jaeger_telemetry) == (4319, 8888)
    assert {"otlp_public_http", "jaeger_telemetry", "otlp_http"} <= JAEGER_PORTS
    assert {
        "collector1_otlp_public_http",
        "collector2_otlp_public_http",
        "collector2_telemetry",
    } <= PIPELINE_PORTS
    free = Ports.free()
    assert len({getattr(free, name) for name in free.__dataclass_fields__}) == len(
        free.__dataclass_fields__
    )


# -- the plan ------------------------------------------------------------------------------------


def test_the_credential_reaches_our_processes_through_the_environment_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A header variable of the shell would replace the run's credential in the services.
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "Authorization=Basic%20bm8=")
    stack = _plan(tmp_path, public_trace_services="acme-web")
    plan = stack._plan()
    info, password = stack.info, stack.otlp_password
    token = base64.b64encode(f"{OTLP_USER}:{password}".encode()).decode()
    assert stack.otlp_authorization == f"Basic {token}"
    assert info.otlp_http_endpoint == f"http://127.0.0.1:{stack.ports.otlp_public_http}"
    assert info.otlp_internal_endpoint == f"http://127.0.0.1:{stack.ports.otlp_http}"

    jaeger = plan["jaeger"].env
    sha = base64.b64encode(hashlib.sha1(password.encode()).digest()).decode()
    assert jaeger["JAEGER_OTLP_HTPASSWD"] == f"{OTLP_USER}:{{SHA}}{sha}"
    assert password not in json.dumps(jaeger) and token not in json.dumps(jaeger)
    assert jaeger["JAEGER_PUBLIC_SERVICES"] == "acme-web"
    assert jaeger["JAEGER_LEGACY_SERVICES"] == "usage-ledger"
    assert jaeger["JAEGER_OTLP_PUBLIC_HTTP"] == f"127.0.0.1:{stack.ports.otlp_public_http}"
    assert jaeger["JAEGER_CORS_ORIGIN"] == info.frontend_url

    for name in ("auth", "mcp-tools", "omni2", "dashboard", "frontend"):
        env = plan[name].env
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == info.otlp_internal_endpoint, name
        header = env["OTEL_EXPORTER_OTLP_HEADERS"]
        key, _, value = header.partition("=")
        assert (key, unquote(value)) == ("Authorization", stack.otlp_authorization), name
        assert "OTEL_EXPORTER_OTLP_TRACES_HEADERS" not in env, name
    # The page, in the browser, exports to the public path.
    assert (
        plan["frontend"].env["FRONTEND_OTLP_TRACES_URL"] == f"{info.otlp_http_endpoint}/v1/traces"
    )
    # Nobody else holds it, and no command line does.
    for name, service in plan.items():
        if name not in ("auth", "mcp-tools", "omni2", "dashboard", "frontend"):
            assert token not in json.dumps(service.env), name
        assert password not in " ".join(service.argv) and token not in " ".join(service.argv)

    # Traefik: in its rendered config (0600), exporting to the internal path.
    rendered = stack.config_dir / "traefik.yml"
    traefik = yaml.safe_load(rendered.read_text())["tracing"]["otlp"]["http"]
    assert traefik == {
        "endpoint": f"{info.otlp_internal_endpoint}/v1/traces",
        "headers": {"Authorization": stack.otlp_authorization},
    }
    assert rendered.stat().st_mode & 0o777 == 0o600
    # Not in the stack file.
    stack_file = tmp_path / "stack.json"
    info.write(stack_file)
    assert password not in stack_file.read_text() and token not in stack_file.read_text()
    assert StackInfo.read(stack_file) == info


def test_prometheus_scrapes_the_refused_span_count(tmp_path: Path) -> None:
    stack = _plan(tmp_path)
    config = yaml.safe_load(stack._render_prometheus_config().read_text())
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "jaeger"]
    (static,) = job["static_configs"]
    assert f"127.0.0.1:{stack.ports.jaeger_telemetry}" in static["targets"]
    assert stack.info.jaeger_telemetry_urls == [
        f"http://127.0.0.1:{stack.ports.jaeger_telemetry}/metrics"
    ]


def test_up_prints_both_paths(tmp_path: Path) -> None:
    info = _plan(tmp_path).info
    summary = stack_summary(info)
    assert summary["OTLP/HTTP public (browsers)"] == info.otlp_http_endpoint
    assert summary["OTLP internal (services)"].startswith(info.otlp_internal_endpoint)
    assert summary["refused-span metric"] == info.jaeger_telemetry_urls[0]


def test_an_external_jaeger_has_one_path_and_no_credential_of_ours(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "Authorization=Bearer%20theirs")
    stack = _plan(
        tmp_path, jaeger_query_url="http://127.0.0.1:9", jaeger_otlp_endpoint="http://otel:4318/"
    )
    plan = stack._plan()
    info = stack.info
    assert info.otlp_http_endpoint == info.otlp_internal_endpoint == "http://otel:4318"
    assert info.jaeger_telemetry_urls == [] and "jaeger" not in plan
    omni2 = plan["omni2"].env
    assert omni2["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel:4318"
    # Theirs, inherited; ours nowhere.
    assert omni2["OTEL_EXPORTER_OTLP_HEADERS"] == "Authorization=Bearer%20theirs"
    traefik = yaml.safe_load((stack.config_dir / "traefik.yml").read_text())
    assert traefik["tracing"]["otlp"]["http"]["headers"] == {"authorization": "Bearer theirs"}
    token = stack.otlp_authorization.split(" ", 1)[1]
    assert all(token not in json.dumps(s.env) for s in plan.values())
    assert "OTLP internal (services)" not in stack_summary(info)


def test_a_stack_file_from_before_the_two_paths_still_reads(tmp_path: Path) -> None:
    info = _plan(tmp_path).info
    old = {
        k: v
        for k, v in json.loads(json.dumps(info.__dict__)).items()
        if k not in ("otlp_internal_endpoint", "jaeger_telemetry_urls")
    }
    path = tmp_path / "old.json"
    path.write_text(json.dumps(old))
    read = StackInfo.read(path)
    assert read.otlp_internal_endpoint == "" and read.jaeger_telemetry_urls == []
    assert "OTLP internal (services)" not in stack_summary(read)
