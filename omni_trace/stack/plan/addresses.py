"""How to reach every layer of a stack not yet started (`StackInfo`), from its settings and
ports: what the runner writes to the stack file and each builder of the plan reads."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TypedDict

from omni_trace.stack.info import StackInfo
from omni_trace.stack.ports import Ports
from omni_trace.stack.settings import StackSettings


def prometheus_binary(settings: StackSettings) -> str | None:
    """OMNI_TRACE_PROMETHEUS_BIN, or Debian's Prometheus (the `prometheus` package)."""
    return str(settings.prometheus_bin) if settings.prometheus_bin else shutil.which("prometheus")


def uses_kafka(settings: StackSettings) -> bool:
    """The Kafka trace pipeline runs only with our own Jaeger."""
    return settings.trace_pipeline == "kafka" and not settings.jaeger_query_url


def plan_info(
    settings: StackSettings,
    ports: Ports,
    logs_dir: Path,
    *,
    viewers: bool,
    database_url: str,
) -> StackInfo:
    host, p = settings.host, ports
    return StackInfo(
        dashboard_url=f"http://{host}:{p.dashboard}",
        dashboard_ws_url=f"ws://{host}:{p.dashboard}/ws/chat",
        traefik_url=f"http://{host}:{p.traefik}",
        traefik_ws_url=f"ws://{host}:{p.traefik}/ws/chat",
        traefik_public_ws_url=f"ws://{host}:{p.traefik_public}/ws/chat",
        traefik_public_url=f"http://{host}:{p.traefik_public}",
        auth_url=f"http://{host}:{p.auth}",
        omni2_url=f"http://{host}:{p.omni2}",
        omni2_ws_url=f"ws://{host}:{p.omni2}/ws/chat",
        logs_dir=str(logs_dir),
        traefik_access_log=str(logs_dir / "traefik-access.log"),
        frontend_url=f"http://{host}:{p.frontend}",
        mcp_url=f"http://{host}:{p.mcp_tools}/mcp",
        flowview_url=f"http://{host}:{p.flowview}" if viewers else "",
        prometheus_url=(
            f"http://{host}:{p.prometheus}"
            if viewers and prometheus_binary(settings) and not settings.jaeger_query_url
            else ""
        ),
        omni2_replicas=[
            f"http://{host}:{port}" for port in (p.omni2, p.omni2_2)[: settings.omni2_replicas]
        ],
        dashboard_replicas=_dashboard_replicas(settings, p),
        omni2_database_url=database_url,
        **_jaeger_addresses(settings, p),
    )


def _dashboard_replicas(settings: StackSettings, p: Ports) -> list[str]:
    ports = (p.dashboard_1, p.dashboard_2) if settings.dashboard_replicas > 1 else (p.dashboard,)
    return [f"http://{settings.host}:{port}" for port in ports]


class _JaegerAddresses(TypedDict):
    jaeger_query_url: str
    otlp_http_endpoint: str
    otlp_internal_endpoint: str
    jaeger_telemetry_urls: list[str]
    jaeger_thrift_compact: str
    trace_pipeline: str
    kafka_brokers: str
    jaeger_parts: dict[str, str]


def _jaeger_addresses(settings: StackSettings, p: Ports) -> _JaegerAddresses:
    """Jaeger's query API and OTLP paths: our own (one Jaeger, or the Kafka pipeline's
    collectors behind a balancer), or a configured one's."""
    host, external = settings.host, settings.jaeger_query_url
    kafka = uses_kafka(settings)
    telemetry = (p.jaeger_telemetry, p.collector2_telemetry)[: 2 if kafka else 1]
    return _JaegerAddresses(
        jaeger_query_url=(external or f"http://{host}:{p.jaeger_query}").rstrip("/"),
        otlp_http_endpoint=(
            settings.jaeger_otlp_endpoint or f"http://{host}:{p.otlp_public_http}"
        ).rstrip("/"),
        otlp_internal_endpoint=(
            settings.jaeger_otlp_endpoint or f"http://{host}:{p.otlp_http}"
        ).rstrip("/"),
        jaeger_telemetry_urls=(
            [] if external else [f"http://{host}:{port}/metrics" for port in telemetry]
        ),
        # With the Kafka pipeline, the first collector's `jaeger` receiver.
        jaeger_thrift_compact="" if external else f"{host}:{p.jaeger_thrift_compact}",
        trace_pipeline="kafka" if kafka else "memory",
        kafka_brokers=f"{host}:{p.kafka}" if kafka else "",
        jaeger_parts=jaeger_parts(host, p) if kafka else {},
    )


def jaeger_parts(host: str, p: Ports) -> dict[str, str]:
    """Each part of the Kafka pipeline and its health URL."""
    health = {
        "jaeger-collector-1": p.jaeger_health,
        "jaeger-collector-2": p.collector2_health,
        "jaeger-ingester-1": p.ingester1_health,
        "jaeger-ingester-2": p.ingester2_health,
        "jaeger-storage": p.jaeger_storage_health,
        "jaeger-query": p.jaeger_query_health,
    }
    return {name: f"http://{host}:{port}/status" for name, port in health.items()}
