"""The config files the runner renders into the run's 0700 config directory, from the templates
under config/ (Traefik, its OTLP balancer, Prometheus and its alert rules, the Jaeger UI's
links) and the flow view's token file."""

from __future__ import annotations

import json
from pathlib import Path
from string import Template
from urllib.parse import urlsplit

import yaml

from omni_trace.stack.alerts import render_rules
from omni_trace.stack.jaeger_ui import jaeger_ui_config
from omni_trace.stack.paths import CONFIG_DIR, write_private
from omni_trace.stack.plan.run import Run
from omni_trace.stack.ports import is_loopback

_TRAEFIK = CONFIG_DIR / "traefik"


def traefik_config(run: Run) -> Path:
    template = (_TRAEFIK / "traefik.yml").read_text()
    host, info = run.host, run.info
    config = yaml.safe_load(
        Template(template).substitute(
            TRAEFIK_ADDRESS=f"{host}:{run.ports.traefik}",
            TRAEFIK_PUBLIC_ADDRESS=f"{host}:{run.ports.traefik_public}",
            TRAEFIK_DYNAMIC_FILE=str(_TRAEFIK / "dynamic.yml"),
            TRAEFIK_ACCESS_LOG=info.traefik_access_log,
            TRAEFIK_OTLP_TRACES_URL=f"{info.otlp_internal_endpoint}/v1/traces",
        )
    )
    if not run.tracing:
        del config["tracing"]  # "off" means off in every layer
    elif headers := run.traefik_otlp_headers():
        # Traefik's exporter ignores OTEL_EXPORTER_OTLP_HEADERS (it sets its own headers,
        # `tracing.otlp.http.headers`, which replace the environment's), so the credential
        # goes in this rendered copy (0600, in the 0700 config dir; Traefik logs its static
        # configuration only at DEBUG, and without the headers).
        config["tracing"]["otlp"]["http"]["headers"] = headers
    if run.front_gateway:
        # The same entry point as the gateway's, on the dashboard's public address.
        front = dict(config["entryPoints"]["web"])
        front["address"] = f"{host}:{run.ports.dashboard}"
        config["entryPoints"]["front"] = front
    path = run.config_dir / "traefik.yml"
    write_private(path, yaml.safe_dump(config, sort_keys=False))
    return path


def otlp_balancer_config(run: Run) -> Path:
    template = (_TRAEFIK / "otlp-balancer.yml").read_text()
    path = run.config_dir / "otlp-balancer.yml"
    path.write_text(
        Template(template).substitute(
            OTLP_BALANCER_ADDRESS=f"{run.host}:{run.ports.otlp_http}",
            OTLP_BALANCER_PUBLIC_ADDRESS=f"{run.host}:{run.ports.otlp_public_http}",
            OTLP_BALANCER_DYNAMIC_FILE=str(_TRAEFIK / "otlp-balancer-dynamic.yml"),
        )
    )
    return path


def jaeger_ui_config_file(run: Run) -> str:
    """The UI's links to the flow view; empty (no UI configuration) without one."""
    if not run.info.flowview_url:
        return ""
    path = run.config_dir / "jaeger-ui.json"
    path.write_text(json.dumps(jaeger_ui_config(run.info.flowview_url), indent=2))
    return str(path)


def prometheus_config(run: Run) -> Path:
    """Prometheus scrapes Jaeger's metrics (each collector's, with the Kafka pipeline) and
    the flow view's audit (config/prometheus/prometheus.yml)."""
    template = (CONFIG_DIR / "prometheus" / "prometheus.yml").read_text()
    # Each Jaeger process's span metrics, then its own telemetry (the refused spans).
    targets = run.metrics_targets
    telemetry = [urlsplit(url).netloc for url in run.info.jaeger_telemetry_urls]
    config = yaml.safe_load(
        Template(template).substitute(
            JAEGER_METRICS=targets[0],
            JAEGER_TELEMETRY=telemetry[0],
            FLOWVIEW=f"{run.host}:{run.ports.flowview}",
            ALERT_RULES=str(alert_rules(run)),
        )
    )
    (jaeger,) = (job for job in config["scrape_configs"] if job["job_name"] == "jaeger")
    jaeger["static_configs"] = [{"targets": targets + telemetry}]
    if not is_loopback(run.host):
        (flowview,) = (job for job in config["scrape_configs"] if job["job_name"] == "flowview")
        flowview["authorization"] = {"credentials_file": str(flowview_token_file(run))}
    path = run.config_dir / "prometheus.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def alert_rules(run: Run) -> Path:
    """Prometheus' alerting rules with the settings' budgets (omni_trace/stack/alerts.py)."""
    path = run.config_dir / "alerts.yml"
    path.write_text(render_rules(run.settings))
    return path


def flowview_token_file(run: Run) -> Path:
    """The flow view's access token, for the user and Prometheus (0600, in the 0700 dir)."""
    path = run.config_dir / "flowview-token"
    write_private(path, run.secrets.flowview_token)
    return path
