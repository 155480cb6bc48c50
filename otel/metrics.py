"""Meter provider setup and the project's instruments (the names are in `otel.names.Metric`).

Metrics go by OTLP/HTTP to the same collector as the spans (Jaeger, whose prometheus
exporter serves them with its span metrics), so a stack needs no second telemetry path.
Business code records through the helpers here and never builds a provider.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache

from opentelemetry import metrics
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.sdk.environment_variables import OTEL_METRICS_EXEMPLAR_FILTER
from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter, MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource

from otel.names import Attr, Metric

_METRICS_PATH = "/v1/metrics"
_INTERVAL = "OTEL_METRIC_EXPORT_INTERVAL"
# Prometheus scrapes every few seconds: the SDK's default of 60 s would leave a dashboard a
# minute behind the chat. OTEL_METRIC_EXPORT_INTERVAL wins.
_DEFAULT_INTERVAL_MS = 5000
_SECONDS_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30)
_TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576)


def create_meter_provider(resource: Resource, *, otlp_endpoint: str | None = None) -> MeterProvider:
    """A provider exporting every few seconds; `OTEL_EXPORTER_OTLP_*` are honoured by the SDK
    and `otlp_endpoint` (a base URL) overrides the endpoint."""
    endpoint = otlp_endpoint.rstrip("/") + _METRICS_PATH if otlp_endpoint else None
    interval = None if os.environ.get(_INTERVAL) else _DEFAULT_INTERVAL_MS
    reader = PeriodicExportingMetricReader(
        OTLPMetricExporter(endpoint=endpoint), export_interval_millis=interval
    )
    # Exemplars off unless asked for: the collector's Prometheus exporter here drops them (no
    # OpenMetrics), and offering each measurement made inside a sampled trace to a reservoir
    # was ~0.04 ms per message in OMNI2's profile. OTEL_METRICS_EXEMPLAR_FILTER wins.
    exemplars = None if os.environ.get(OTEL_METRICS_EXEMPLAR_FILTER) else AlwaysOffExemplarFilter()
    return MeterProvider(metric_readers=[reader], resource=resource, exemplar_filter=exemplars)


@dataclass(frozen=True)
class ChatMetrics:
    """The instruments, made on first use from the global meter provider (a no-op one when the
    SDK is disabled, so recording then costs next to nothing)."""

    time_to_first_token: metrics.Histogram
    token_usage: metrics.Histogram
    cost: metrics.Counter

    def first_token(self, seconds: float) -> None:
        self.time_to_first_token.record(seconds)

    def usage(
        self,
        *,
        provider: str,
        model: str,
        user_id: str,
        input_tokens: int,
        output_tokens: int,
        cost: float,
    ) -> None:
        """One answered message's tokens and cost, labelled by model and user."""
        common: Mapping[str, str] = {
            Attr.GEN_AI_OPERATION: "chat",
            Attr.GEN_AI_PROVIDER: provider,
            Attr.GEN_AI_REQUEST_MODEL: model,
            Attr.USER_ID: user_id,
        }
        self.token_usage.record(input_tokens, {**common, "gen_ai.token.type": "input"})
        self.token_usage.record(output_tokens, {**common, "gen_ai.token.type": "output"})
        self.cost.add(cost, {Attr.GEN_AI_REQUEST_MODEL: model, Attr.USER_ID: user_id})

    @classmethod
    def create(cls, meter: metrics.Meter) -> ChatMetrics:
        return cls(
            time_to_first_token=meter.create_histogram(
                Metric.TIME_TO_FIRST_TOKEN,
                unit="s",
                description="time to the first token frame, at this layer",
                explicit_bucket_boundaries_advisory=_SECONDS_BUCKETS,
            ),
            token_usage=meter.create_histogram(
                Metric.TOKEN_USAGE,
                unit="{token}",
                description="tokens of one answered message",
                explicit_bucket_boundaries_advisory=_TOKEN_BUCKETS,
            ),
            cost=meter.create_counter(
                Metric.COST, unit="{USD}", description="cost of answered messages"
            ),
        )


@cache
def chat_metrics() -> ChatMetrics:
    return ChatMetrics.create(metrics.get_meter("omni-trace"))
