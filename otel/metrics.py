"""Meter provider setup and the project's instruments (the names are in `otel.names.Metric`).

Metrics go by OTLP/HTTP to the same collector as the spans (Jaeger, whose prometheus
exporter serves them with its span metrics), so a stack needs no second telemetry path.
Business code records through the helpers here and never builds a provider.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache

from opentelemetry import metrics
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.sdk.environment_variables import OTEL_METRICS_EXEMPLAR_FILTER
from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter, MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource

from otel.histograms import LocalHistograms, LocalMetricReader, Recorder
from otel.names import METRICS, Attr, Metric
from otel.semconv import gen_ai_latest_experimental

_METRICS_PATH = "/v1/metrics"
_INTERVAL = "OTEL_METRIC_EXPORT_INTERVAL"
# Prometheus scrapes every few seconds: the SDK's default of 60 s would leave a dashboard a
# minute behind the chat. OTEL_METRIC_EXPORT_INTERVAL wins.
_DEFAULT_INTERVAL_MS = 5000
# Our own time to first token (no convention covers a relay): fine buckets for milliseconds.
_SECONDS_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30)
# The conventions' advisory boundaries (semconv v1.41.0, gen-ai-metrics.md and mcp.md).
_TOKEN_BUCKETS = (
    1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864,
)  # fmt: skip
_GENAI_SECONDS_BUCKETS = (
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
)  # fmt: skip
_SERVER_TTFT_BUCKETS = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
)  # fmt: skip
_SERVER_TPOT_BUCKETS = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5,
)  # fmt: skip
_MCP_SECONDS_BUCKETS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30, 60, 120, 300)


def create_meter_provider(resource: Resource, *, otlp_endpoint: str | None = None) -> MeterProvider:
    """A provider exporting every few seconds; `OTEL_EXPORTER_OTLP_*` are honoured by the SDK
    and `otlp_endpoint` (a base URL) overrides the endpoint."""
    endpoint = otlp_endpoint.rstrip("/") + _METRICS_PATH if otlp_endpoint else None
    interval = None if os.environ.get(_INTERVAL) else _DEFAULT_INTERVAL_MS
    exporter = OTLPMetricExporter(endpoint=endpoint)
    # Exemplars off unless asked for: the collector's Prometheus exporter here drops them (no
    # OpenMetrics), and offering each measurement made inside a sampled trace to a reservoir
    # was ~0.04 ms per message in OMNI2's profile. OTEL_METRICS_EXEMPLAR_FILTER wins, and
    # then the histograms are the SDK's (the local ones keep no exemplars).
    if os.environ.get(OTEL_METRICS_EXEMPLAR_FILTER):
        reader = PeriodicExportingMetricReader(exporter, export_interval_millis=interval)
        return MeterProvider(metric_readers=[reader], resource=resource)
    reader = LocalMetricReader(exporter, _LOCAL, resource, export_interval_millis=interval)
    return MeterProvider(
        metric_readers=[reader], resource=resource, exemplar_filter=AlwaysOffExemplarFilter()
    )


@dataclass(frozen=True)
class ChatMetrics:
    """The instruments, made on first use from the global meter provider (a no-op one when the
    SDK is disabled, so recording then costs next to nothing). Names, units and attributes are
    the table in `otel.names.Metric`; the GenAI and MCP ones follow the conventions."""

    time_to_first_token: Recorder
    token_usage: Recorder
    cost: metrics.Counter
    operation_duration: Recorder
    time_to_first_chunk: Recorder
    time_per_output_chunk: Recorder
    server_time_to_first_token: Recorder
    server_time_per_output_token: Recorder
    server_request_duration: Recorder
    mcp_client_duration: Recorder
    mcp_server_duration: Recorder

    def first_token(self, seconds: float, *, server_of_stream: bool = False) -> None:
        """Our per-layer `chat.time_to_first_token` (the dashboard's and OMNI2's). OMNI2's
        (`server_of_stream`) is the old name of gen_ai.server.time_to_first_token: it stops
        under `gen_ai_latest_experimental` (otel/semconv.py)."""
        if server_of_stream and gen_ai_latest_experimental():
            return
        self.time_to_first_token.record(seconds)

    def usage_cost(self, *, model: str, user_id: str, cost: float) -> None:
        """One answered message's cost, labelled by model and user (no convention for cost)."""
        self.cost.add(cost, {Attr.GEN_AI_REQUEST_MODEL: model, Attr.USER_ID: user_id})

    def model_call(
        self,
        provider: str,
        model: str,
        server: tuple[str, int] | None = None,
        *,
        each_chunk: bool = True,
    ) -> ModelCallMetrics:
        """The recorder of one streamed model call (gen_ai.client.*); `each_chunk=False`
        leaves out time per output chunk (a record per chunk: its cost grows with the
        answer)."""
        attributes: dict[str, str | int] = {
            Attr.GEN_AI_OPERATION: "chat",
            Attr.GEN_AI_PROVIDER: provider,
            Attr.GEN_AI_REQUEST_MODEL: model,
        }
        if server is not None:
            attributes[Attr.SERVER_ADDRESS], attributes[Attr.SERVER_PORT] = server
        return ModelCallMetrics(self, attributes, time.perf_counter(), each_chunk)

    def served(
        self,
        attributes: Mapping[str, str],
        *,
        seconds: float,
        first_token_s: float | None,
        output_tokens: int,
        error_type: str | None = None,
    ) -> None:
        """One message answered by OMNI2 as the server of the stream (gen_ai.server.*):
        `attributes` are operation, provider and request model, built once per connection.
        Time per output token is computed once, as the convention defines it: the duration
        after the first token over the output tokens after the first."""
        if error_type is not None:
            self.server_request_duration.record(
                seconds, {**attributes, Attr.ERROR_TYPE: error_type}
            )
            return
        self.server_request_duration.record(seconds, attributes)
        if first_token_s is None:
            return
        self.server_time_to_first_token.record(first_token_s, attributes)
        if output_tokens > 1:
            self.server_time_per_output_token.record(
                max(seconds - first_token_s, 0.0) / (output_tokens - 1), attributes
            )

    def mcp_client(
        self,
        method: str,
        tool: str | None,
        seconds: float,
        *,
        error_type: str | None = None,
        server: tuple[str, int] | None = None,
    ) -> None:
        """One MCP request sent by OMNI2, from sending it to its answer."""
        self.mcp_client_duration.record(seconds, _mcp_attributes(method, tool, error_type, server))

    def mcp_server(
        self,
        method: str,
        tool: str | None,
        seconds: float,
        *,
        error_type: str | None = None,
        protocol_version: str | None = None,
    ) -> None:
        """One MCP request or notification handled by the tool server. `method`, `tool` and
        `protocol_version` must already be bounded by the caller (they come from a client)."""
        attributes = _mcp_attributes(method, tool, error_type)
        if protocol_version:
            attributes = {**attributes, "mcp.protocol.version": protocol_version}
        self.mcp_server_duration.record(seconds, attributes)

    @classmethod
    def create(cls, meter: metrics.Meter, local: LocalHistograms | None = None) -> ChatMetrics:
        """`local`: the histograms are aggregated in process (otel/histograms.py) and
        exported by the reader that holds `local`; else they are the meter's."""

        def histogram(name: str, buckets: Sequence[float], description: str) -> Recorder:
            if local is not None:
                return local.histogram(name, METRICS[name].unit, description, buckets)
            return meter.create_histogram(
                name,
                unit=METRICS[name].unit,
                description=description,
                explicit_bucket_boundaries_advisory=buckets,
            )

        return cls(
            time_to_first_token=histogram(
                Metric.TIME_TO_FIRST_TOKEN,
                _SECONDS_BUCKETS,
                "time to the first token frame, at this layer",
            ),
            token_usage=histogram(
                Metric.TOKEN_USAGE, _TOKEN_BUCKETS, "Number of input and output tokens used."
            ),
            cost=meter.create_counter(
                Metric.COST, unit="{USD}", description="cost of answered messages"
            ),
            operation_duration=histogram(
                Metric.OPERATION_DURATION, _GENAI_SECONDS_BUCKETS, "GenAI operation duration."
            ),
            time_to_first_chunk=histogram(
                Metric.TIME_TO_FIRST_CHUNK,
                _GENAI_SECONDS_BUCKETS,
                "Time to receive the first chunk of a streamed response.",
            ),
            time_per_output_chunk=histogram(
                Metric.TIME_PER_OUTPUT_CHUNK,
                _GENAI_SECONDS_BUCKETS,
                "Time per output chunk after the first, from the previous chunk.",
            ),
            server_time_to_first_token=histogram(
                Metric.SERVER_TIME_TO_FIRST_TOKEN,
                _SERVER_TTFT_BUCKETS,
                "Time to generate first token for successful responses.",
            ),
            server_time_per_output_token=histogram(
                Metric.SERVER_TIME_PER_OUTPUT_TOKEN,
                _SERVER_TPOT_BUCKETS,
                "Time per output token generated after the first token for successful responses.",
            ),
            server_request_duration=histogram(
                Metric.SERVER_REQUEST_DURATION,
                _GENAI_SECONDS_BUCKETS,
                "Generative AI server request duration.",
            ),
            mcp_client_duration=histogram(
                Metric.MCP_CLIENT_DURATION,
                _MCP_SECONDS_BUCKETS,
                "The duration of the MCP request as observed on the sender.",
            ),
            mcp_server_duration=histogram(
                Metric.MCP_SERVER_DURATION,
                _MCP_SECONDS_BUCKETS,
                "MCP request or notification duration as observed on the receiver.",
            ),
        )


class ModelCallMetrics:
    """One streamed model call's gen_ai.client.* measurements. Its attribute dict is built
    once; per chunk it does what the convention asks (one histogram record) and no more."""

    __slots__ = ("_attributes", "_each_chunk", "_last", "_metrics", "_started")

    def __init__(
        self,
        chat: ChatMetrics,
        attributes: dict[str, str | int],
        started: float,
        each_chunk: bool = True,
    ) -> None:
        self._metrics = chat
        self._attributes = attributes
        self._started = started
        self._each_chunk = each_chunk
        self._last: float | None = None

    def chunk(self) -> float:
        """A text chunk arrived; returns the seconds since the request (for the span)."""
        now = time.perf_counter()
        if self._last is None:
            self._metrics.time_to_first_chunk.record(now - self._started, self._attributes)
        elif self._each_chunk:
            self._metrics.time_per_output_chunk.record(now - self._last, self._attributes)
        self._last = now
        return now - self._started

    def finished(
        self, *, response_model: str, input_tokens: int, output_tokens: int, user_id: str
    ) -> None:
        done = {**self._attributes, Attr.GEN_AI_RESPONSE_MODEL: response_model}
        self._metrics.operation_duration.record(time.perf_counter() - self._started, done)
        usage = {**done, Attr.USER_ID: user_id}
        self._metrics.token_usage.record(input_tokens, {**usage, _TOKEN_TYPE: "input"})
        self._metrics.token_usage.record(output_tokens, {**usage, _TOKEN_TYPE: "output"})

    def failed(self, error_type: str) -> None:
        self._metrics.operation_duration.record(
            time.perf_counter() - self._started, {**self._attributes, Attr.ERROR_TYPE: error_type}
        )


_TOKEN_TYPE = "gen_ai.token.type"
# One attribute dict per (method, tool, error) reused: the set is small and bounded by the
# callers (known methods and tools only).
_McpKey = tuple[str, str | None, str | None, tuple[str, int] | None]
_MCP_ATTRIBUTES: dict[_McpKey, Mapping[str, str | int]] = {}
_MCP_ATTRIBUTES_MAX = 512


def _mcp_attributes(
    method: str,
    tool: str | None,
    error_type: str | None,
    server: tuple[str, int] | None = None,
) -> Mapping[str, str | int]:
    key = (method, tool, error_type, server)
    found = _MCP_ATTRIBUTES.get(key)
    if found is not None:
        return found
    attributes: dict[str, str | int] = {Attr.MCP_METHOD: method, "network.transport": "tcp"}
    if method == "tools/call":
        attributes[Attr.GEN_AI_OPERATION] = "execute_tool"
        if tool:
            attributes[Attr.GEN_AI_TOOL_NAME] = tool
    if error_type is not None:
        attributes[Attr.ERROR_TYPE] = error_type
    if server is not None:
        attributes[Attr.SERVER_ADDRESS], attributes[Attr.SERVER_PORT] = server
    if len(_MCP_ATTRIBUTES) < _MCP_ATTRIBUTES_MAX:
        _MCP_ATTRIBUTES[key] = attributes
    return attributes


_SCOPE = "omni-trace"
# Used once a reader exports it (create_meter_provider); with the SDK disabled no provider
# is made and the meter's no-op histograms cost next to nothing.
_LOCAL = LocalHistograms(_SCOPE)


@cache
def chat_metrics() -> ChatMetrics:
    return ChatMetrics.create(metrics.get_meter(_SCOPE), _LOCAL if _LOCAL.exported else None)
