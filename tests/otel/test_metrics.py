"""The services' metrics: names, units and labels as the table in otel/names.py says."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from otel.metrics import ChatMetrics
from otel.names import METRICS, Attr, Metric


def _collect(reader: InMemoryMetricReader) -> dict[str, Any]:
    data = reader.get_metrics_data()
    assert data is not None
    return {
        metric.name: metric
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
    }


def test_one_answered_message_records_tokens_and_cost_per_user() -> None:
    reader = InMemoryMetricReader()
    chat = ChatMetrics.create(MeterProvider(metric_readers=[reader]).get_meter("test"))
    chat.first_token(0.012)
    chat.usage(
        provider="offline",
        model="m1",
        user_id="alice",
        input_tokens=40,
        output_tokens=7,
        cost=0.25,
    )
    chat.usage(
        provider="offline", model="m1", user_id="bob", input_tokens=3, output_tokens=1, cost=0.5
    )
    found = _collect(reader)
    assert set(found) == set(METRICS)
    for name, doc in METRICS.items():
        assert found[name].unit == doc.unit, name

    tokens = {
        (p.attributes[Attr.USER_ID], p.attributes["gen_ai.token.type"]): p.sum
        for p in found[Metric.TOKEN_USAGE].data.data_points
    }
    assert tokens == {
        ("alice", "input"): 40,
        ("alice", "output"): 7,
        ("bob", "input"): 3,
        ("bob", "output"): 1,
    }
    labels = {frozenset(p.attributes) for p in found[Metric.TOKEN_USAGE].data.data_points}
    assert labels == {frozenset(METRICS[Metric.TOKEN_USAGE].attributes)}

    costs = {p.attributes[Attr.USER_ID]: p.value for p in found[Metric.COST].data.data_points}
    assert costs == {"alice": 0.25, "bob": 0.5}

    (ttft,) = found[Metric.TIME_TO_FIRST_TOKEN].data.data_points
    assert ttft.count == 1 and ttft.sum == 0.012 and dict(ttft.attributes or {}) == {}
    # Buckets fine enough for a first token in milliseconds.
    assert ttft.explicit_bounds[0] <= 0.001


def test_exemplars_are_off_unless_the_standard_variable_asks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter, TraceBasedExemplarFilter
    from opentelemetry.sdk.resources import Resource

    from otel.metrics import create_meter_provider

    def chosen() -> object:
        provider = create_meter_provider(Resource.create({}), otlp_endpoint="http://127.0.0.1:9")
        try:
            return provider._sdk_config.exemplar_filter
        finally:
            provider.shutdown()

    monkeypatch.delenv("OTEL_METRICS_EXEMPLAR_FILTER", raising=False)
    assert isinstance(chosen(), AlwaysOffExemplarFilter)
    monkeypatch.setenv("OTEL_METRICS_EXEMPLAR_FILTER", "trace_based")
    assert isinstance(chosen(), TraceBasedExemplarFilter)
