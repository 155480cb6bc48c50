"""Tracer and meter provider setup: the only place that builds providers and exporters."""

from __future__ import annotations

import logging
import os

import requests
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider

from otel.export import EncodingSpanProcessor
from otel.metrics import create_meter_provider
from otel.otlp import OtlpSpanExporter
from otel.processors import InheritAttributesProcessor
from otel.sampling import ServerDecisionSampler

log = logging.getLogger(__name__)

_TRACES_PATH = "/v1/traces"
_BSP_DELAY = "OTEL_BSP_SCHEDULE_DELAY"
_PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY")
_DEFAULT_BSP_DELAY_MS = 200


def sdk_disabled() -> bool:
    return os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"


def create_tracer_provider(
    service_name: str, *, otlp_endpoint: str | None = None
) -> TracerProvider:
    """A provider that redacts and encodes each span as it ends and exports to OTLP/HTTP.

    `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER`, `OTEL_BSP_*` and
    `OTEL_EXPORTER_OTLP_*` are honoured by the SDK (among them `OTEL_EXPORTER_OTLP_HEADERS`,
    which carries the internal OTLP path's credential to our services); `otlp_endpoint` (a
    base URL such as the public path's http://127.0.0.1:4319, where clients export)
    overrides the endpoint for callers that talk to several stacks.
    The sampler obeys a server's per-connection decision first (`otel.sampling`).
    """
    provider = TracerProvider(resource=_resource(service_name), sampler=ServerDecisionSampler())
    endpoint = otlp_endpoint.rstrip("/") + _TRACES_PATH if otlp_endpoint else None
    exporter = OtlpSpanExporter(endpoint=endpoint, session=_session())
    provider.add_span_processor(InheritAttributesProcessor())
    # A short default delay keeps traces queryable soon after a message; OTEL_BSP_* wins.
    delay = None if os.environ.get(_BSP_DELAY) else _DEFAULT_BSP_DELAY_MS
    provider.add_span_processor(EncodingSpanProcessor(exporter, schedule_delay_millis=delay))
    return provider


def _resource(service_name: str) -> Resource:
    attributes = {} if os.environ.get("OTEL_SERVICE_NAME") else {SERVICE_NAME: service_name}
    return Resource.create(attributes)


def _session() -> requests.Session:
    """The exporter's HTTP session. Without a proxy configured, it does not consult the
    environment on every request: requests otherwise looks up proxies and ~/.netrc for each
    export, which the profile under load showed as a share of the dashboard's export cost."""
    session = requests.Session()
    session.trust_env = any(os.environ.get(name) for name in _PROXY_VARIABLES)
    return session


def setup_tracing(service_name: str) -> trace.TracerProvider:
    """Install the global tracer and meter providers for a service; call once at start.

    With `OTEL_SDK_DISABLED=true` nothing is exported and the API's no-op providers stay.
    """
    if sdk_disabled():
        log.info("OpenTelemetry SDK disabled: %s emits no spans or metrics", service_name)
        return trace.get_tracer_provider()
    provider = create_tracer_provider(service_name)
    trace.set_tracer_provider(provider)
    metrics.set_meter_provider(create_meter_provider(_resource(service_name)))
    return provider


def shutdown_tracing(timeout_millis: int = 3000) -> None:
    """Flush what is queued (bounded, so a dead Jaeger cannot hold up shutdown)."""
    provider = trace.get_tracer_provider()
    if isinstance(provider, TracerProvider):
        provider.force_flush(timeout_millis)
        provider.shutdown()
    meters = metrics.get_meter_provider()
    if isinstance(meters, MeterProvider):
        meters.shutdown(timeout_millis)
