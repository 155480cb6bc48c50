"""The services' metrics: names, units and labels as the table in otel/names.py says."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from otel.metrics import ChatMetrics
from otel.names import METRICS, Attr, Metric
from tests.otel.collected import collect


def test_one_answered_message_records_tokens_and_cost_per_user() -> None:
    reader = InMemoryMetricReader()
    chat = ChatMetrics.create(MeterProvider(metric_readers=[reader]).get_meter("test"))
    chat.first_token(0.012)
    for user, tokens, cost in (("alice", (40, 7), 0.25), ("bob", (3, 1), 0.5)):
        call = chat.model_call("offline", "m1")
        call.finished(
            response_model="m1", input_tokens=tokens[0], output_tokens=tokens[1], user_id=user
        )
        chat.usage_cost(model="m1", user_id=user, cost=cost)
    found = collect(reader)
    recorded = {Metric.TIME_TO_FIRST_TOKEN, Metric.TOKEN_USAGE, Metric.COST}
    assert set(found) == recorded | {Metric.OPERATION_DURATION}
    for name in found:
        assert found[name].unit == METRICS[name].unit, name

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
    # No server here (an in-process model): every other attribute of the table.
    assert labels == {
        frozenset(METRICS[Metric.TOKEN_USAGE].attributes) - {"server.address", "server.port"}
    }

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
