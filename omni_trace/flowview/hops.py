"""Hops over time: latency percentiles and error rates per layer, from span metrics.

Jaeger's spanmetrics connector turns every span into calls and duration histograms per
service and span name (config/jaeger/config.yaml); Prometheus scrapes them. The hops are
the spans each layer records for a message.
"""

from __future__ import annotations

import math
import time
from typing import Any

import httpx

from otel.names import METRICS, Metric, SpanName

# The span of each layer that a message passes through.
HOP_SPANS = (SpanName.MESSAGE, SpanName.RELAY, "ReverseProxy", SpanName.TURN, SpanName.AUTH_VERIFY)
_SPANS = "|".join(HOP_SPANS)
_BUCKETS = f'traces_span_metrics_duration_milliseconds_bucket{{span_name=~"{_SPANS}"}}'
_CALLS = "traces_span_metrics_calls_total"


# The flow view and the Grafana dashboards (omni_trace/grafana.py) chart the same
# queries; Grafana passes its own window ($__rate_interval).
def latency_query(quantile: float, window: str = "1m") -> str:
    """Milliseconds, per service and hop span."""
    return (
        f"histogram_quantile({quantile}, sum by (le, service_name, span_name) "
        f"(rate({_BUCKETS}[{window}])))"
    )


def error_ratio_query(window: str = "1m") -> str:
    """Error spans over all spans, per service."""
    rate = f"sum by (service_name) (rate({_CALLS}[{window}]))"
    # A layer without a single error span has no error series: `or ... * 0` makes its ratio 0.
    return (
        f'(sum by (service_name) (rate({_CALLS}{{status_code="STATUS_CODE_ERROR"}}[{window}]))'
        f" or {rate} * 0) / {rate}"
    )


# The GenAI and MCP semantic-convention histograms as Jaeger's collector serves them to
# Prometheus: dots become underscores and a unit of seconds adds `_seconds` (an annotation
# unit such as `{token}` adds nothing), so gen_ai.server.time_to_first_token (s) is
# gen_ai_server_time_to_first_token_seconds_{bucket,sum,count}.
_UNIT_SUFFIX = {"s": "_seconds", "ms": "_milliseconds", "By": "_bytes"}


def prometheus_name(metric: str, unit: str) -> str:
    """The series name (without _bucket/_sum/_count) of an OTLP histogram in Prometheus."""
    return metric.replace(".", "_") + _UNIT_SUFFIX.get(unit, "")


def histogram_quantile_query(
    quantile: float, series: str, by: tuple[str, ...], window: str = "1m"
) -> str:
    """A quantile of a Prometheus histogram, per the labels in `by`."""
    labels = ", ".join(("le", *by))
    return f"histogram_quantile({quantile}, sum by ({labels}) (rate({series}_bucket[{window}])))"


# The GenAI series the hop page charts beside the span metrics, by their standard names: how
# fast OMNI2 serves the first token, and the gaps between the model's chunks as OMNI2
# receives them. Per service (the collector puts a metric's service.name in `exported_job`)
# and requested model.
GENAI_METRICS = (Metric.SERVER_TIME_TO_FIRST_TOKEN, Metric.TIME_PER_OUTPUT_CHUNK)
GENAI_BY = ("exported_job", "gen_ai_request_model")


def genai_query(metric: str, quantile: float, window: str = "1m") -> str:
    """Seconds, per service and requested model."""
    series = prometheus_name(metric, METRICS[metric].unit)
    return histogram_quantile_query(quantile, series, GENAI_BY, window)


NO_PROMETHEUS = (
    "no Prometheus: the hop chart needs Debian's prometheus package (scripts/bootstrap "
    "installs it), then restart the stack"
)


class MetricsUnavailable(RuntimeError):
    pass


class HopMetrics:
    def __init__(self, prometheus_url: str, timeout: float = 5.0) -> None:
        self.url = prometheus_url.rstrip("/")
        self._http = httpx.Client(timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def _range(self, query: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
        try:
            response = self._http.get(
                f"{self.url}/api/v1/query_range",
                params={"query": query, "start": start, "end": end, "step": step},
            )
        except httpx.HTTPError as err:
            raise MetricsUnavailable(f"Prometheus at {self.url} unreachable: {err}") from err
        if response.status_code != 200:
            raise MetricsUnavailable(
                f"Prometheus answered {response.status_code}: {response.text[:200]}"
            )
        return list(response.json()["data"]["result"])

    def hops(self, minutes: float) -> dict[str, Any]:
        end = time.time()
        start = end - minutes * 60
        step = max(5.0, minutes * 60 / 120)  # at most 120 points per line
        series = []
        for quantile in (0.5, 0.95):
            for result in self._range(latency_query(quantile), start, end, step):
                labels = result["metric"]
                series.append(
                    {
                        "service": labels.get("service_name", ""),
                        "span": labels.get("span_name", ""),
                        "quantile": quantile,
                        "points": _points(result["values"]),
                    }
                )
        errors = [
            {"service": r["metric"].get("service_name", ""), "points": _points(r["values"])}
            for r in self._range(error_ratio_query(), start, end, step)
        ]
        genai = [
            {
                "metric": metric,
                "service": r["metric"].get("exported_job", ""),
                "model": r["metric"].get("gen_ai_request_model", ""),
                "quantile": quantile,
                "points": _points(r["values"]),
            }
            for metric in GENAI_METRICS
            for quantile in (0.5, 0.95)
            for r in self._range(genai_query(metric, quantile), start, end, step)
        ]
        return {
            "available": True,
            "minutes": minutes,
            "latency_ms": [s for s in series if s["points"]],
            "error_ratio": [e for e in errors if e["points"]],
            "genai_s": [g for g in genai if g["points"]],
        }


def _points(values: list[list[Any]]) -> list[list[float]]:
    """[unix seconds, value] pairs; a window without calls (NaN) is a gap, not a zero."""
    points = []
    for stamp, raw in values:
        value = float(raw)
        if math.isfinite(value):
            points.append([float(stamp), value])
    return points
