"""What a client sends cannot relabel the stack's metrics in Prometheus. Jaeger turns every
span into span metrics, the public OTLP path's too, and its prometheus exporter labels each
series `job` and `instance` from the span's resource (service.name, service.instance.id),
which a browser chooses. Prometheus keeps its own scrape job's labels (no honor_labels) and
files the exporter's as `exported_job` and `exported_instance`."""

from __future__ import annotations

import secrets
import time
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from omni_trace.stack import Stack
from otel.names import Service, SpanName

pytestmark = pytest.mark.stack


def _kv(key: str, value: str) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(string_value=value))


def _client_span(name: str, resource: dict[str, str]) -> bytes:
    """One span as a browser could post it, with the resource it chooses."""
    now = time.time_ns()
    span = Span(
        trace_id=secrets.token_bytes(16),
        span_id=secrets.token_bytes(8),
        name=name,
        kind=Span.SPAN_KIND_CLIENT,
        start_time_unix_nano=now - 1_000_000,
        end_time_unix_nano=now,
    )
    return ExportTraceServiceRequest(
        resource_spans=[
            ResourceSpans(
                resource=Resource(attributes=[_kv(k, v) for k, v in resource.items()]),
                scope_spans=[ScopeSpans(spans=[span])],
            )
        ]
    ).SerializeToString()


def _series(stack: Stack, promql: str) -> list[dict[str, Any]]:
    answer = httpx.get(f"{stack.info.prometheus_url}/api/v1/query", params={"query": promql})
    assert answer.status_code == 200, answer.text
    return list(answer.json()["data"]["result"])


def _scrape_targets(stack: Stack) -> dict[str, set[str]]:
    """Each scrape job's target addresses, as Prometheus labels them."""
    answer = httpx.get(f"{stack.info.prometheus_url}/api/v1/targets", timeout=10).json()
    found: dict[str, set[str]] = {}
    for target in answer["data"]["activeTargets"]:
        found.setdefault(target["labels"]["job"], set()).add(target["labels"]["instance"])
    return found


@pytest.mark.slow  # waits on exports or timing: not in --quick
def test_a_client_s_resource_cannot_choose_the_job_or_instance_label(stack: Stack) -> None:
    assert stack.info.prometheus_url, "Prometheus is installed by scripts/bootstrap"
    deadline = time.monotonic() + 30
    while "flowview" not in (targets := _scrape_targets(stack)):  # its first discovery
        assert time.monotonic() < deadline, targets
        time.sleep(0.5)
    forged_instance = next(iter(targets["flowview"]))  # the flow view's own target address
    # A documented name (the stack's telemetry table test reads every client span): the
    # series is told apart by the instance the client claims.
    name = SpanName.MESSAGE
    body = _client_span(
        name, {"service.name": Service.CHAT_CLIENT, "service.instance.id": forged_instance}
    )
    answer = httpx.post(
        f"{stack.info.otlp_http_endpoint}/v1/traces",
        content=body,
        headers={"Content-Type": "application/x-protobuf"},
        timeout=10,
    )
    assert answer.status_code == 200, answer.text  # the public path takes client spans

    query = f'traces_span_metrics_calls_total{{span_name="{name}"}}'
    deadline = time.monotonic() + 60
    while not (series := _claiming(_series(stack, query), forged_instance)):
        assert time.monotonic() < deadline, f"no span metrics of the forged {name} in Prometheus"
        time.sleep(1)
    for found in series:
        labels = found["metric"]
        # The scrape's own labels: the job and the Jaeger target that relayed the series.
        assert labels["job"] == "jaeger", labels
        assert labels["instance"] in targets["jaeger"], labels
        # What the client said, kept apart under the exporter's names.
        assert labels["exported_job"] == Service.CHAT_CLIENT, labels
        assert labels["exported_instance"] == forged_instance, labels
    # Nothing the client sent shows up as the flow view's job.
    assert not _series(stack, f'{{job="flowview", span_name="{name}"}}')


def _claiming(series: list[dict[str, Any]], instance: str) -> list[dict[str, Any]]:
    """The series of the span that claimed `instance`, under either label."""
    claimed = ("instance", "exported_instance")
    return [s for s in series if instance in (s["metric"].get(k) for k in claimed)]
