"""Histograms aggregated in process export what the SDK's own histograms export."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pytest
from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter, Histogram, MeterProvider
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    InMemoryMetricReader,
    MetricExporter,
    MetricExportResult,
    MetricsData,
)
from opentelemetry.sdk.resources import Resource

from otel.histograms import CARDINALITY_LIMIT, LocalHistograms, LocalMetricReader
from otel.metrics import ChatMetrics
from otel.names import METRICS, Attr, Metric

BOUNDS = (0.01, 0.02, 0.04, 0.08)
# On the bounds, between them, zero, past the last; the drops (negative, not finite) too.
VALUES = (0.0, 0.01, 0.015, 0.02, 0.04, 0.0400001, 0.08, 0.5, 7.0, -1.0, math.inf, math.nan)
ATTRIBUTES: Sequence[dict[str, Any] | None] = (
    {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "offline", "server.port": 443},
    # The same set in another order is the same series.
    {"server.port": 443, "gen_ai.provider.name": "offline", "gen_ai.operation.name": "chat"},
    {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "other"},
    None,
)


class Exported(MetricExporter):
    """Keeps what it is given."""

    def __init__(self, temporality: AggregationTemporality) -> None:
        super().__init__(preferred_temporality={Histogram: temporality})
        self.batches: list[MetricsData] = []

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **_: Any) -> Any:
        self.batches.append(metrics_data)
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **_: Any) -> None:
        pass


def points(data: MetricsData | None, name: str) -> dict[frozenset[Any], tuple[Any, ...]]:
    """A metric's data points by attribute set: count, sum, min, max, buckets, bounds."""
    assert data is not None
    found = [
        m
        for r in data.resource_metrics
        for s in r.scope_metrics
        for m in s.metrics
        if m.name == name
    ]
    assert len(found) == 1, found
    return {
        frozenset((p.attributes or {}).items()): (
            p.count,
            round(p.sum, 9),
            p.min,
            p.max,
            tuple(p.bucket_counts),
            tuple(p.explicit_bounds),
        )
        for p in found[0].data.data_points
    }


def local_reader(
    temporality: AggregationTemporality = AggregationTemporality.CUMULATIVE,
) -> tuple[LocalHistograms, Exported, LocalMetricReader, MeterProvider]:
    local = LocalHistograms("test")
    exported = Exported(temporality)
    reader = LocalMetricReader(
        exported, local, Resource.create({"service.name": "t"}), export_interval_millis=math.inf
    )
    provider = MeterProvider(metric_readers=[reader], exemplar_filter=AlwaysOffExemplarFilter())
    return local, exported, reader, provider


def sdk_reader(
    temporality: AggregationTemporality = AggregationTemporality.CUMULATIVE,
) -> tuple[InMemoryMetricReader, MeterProvider]:
    reader = InMemoryMetricReader(preferred_temporality={Histogram: temporality})
    provider = MeterProvider(metric_readers=[reader], exemplar_filter=AlwaysOffExemplarFilter())
    return reader, provider


def test_the_same_values_give_the_sdks_data_points() -> None:
    local, exported, reader, _ = local_reader()
    ours = local.histogram("h", "s", "a histogram", BOUNDS)
    sdk_in, sdk = sdk_reader()
    theirs = sdk.get_meter("test").create_histogram(
        "h", unit="s", explicit_bucket_boundaries_advisory=BOUNDS
    )
    for attributes in ATTRIBUTES:
        for value in VALUES:
            ours.record(value, attributes)
            theirs.record(value, attributes)
    reader.collect()
    (batch,) = exported.batches
    expected = points(sdk_in.get_metrics_data(), "h")
    assert points(batch, "h") == expected
    # Three series (two attribute orders are one), each without the dropped values.
    assert len(expected) == 3
    assert {p[0] for p in expected.values()} == {9, 18}


def test_delta_temporality_starts_again_after_each_collection() -> None:
    local, exported, reader, _ = local_reader(AggregationTemporality.DELTA)
    ours = local.histogram("h", "s", "a histogram", BOUNDS)
    sdk_in, sdk = sdk_reader(AggregationTemporality.DELTA)
    theirs = sdk.get_meter("test").create_histogram(
        "h", unit="s", explicit_bucket_boundaries_advisory=BOUNDS
    )
    for values in ((0.01, 0.03), (0.07,)):
        for value in values:
            ours.record(value, ATTRIBUTES[0])
            theirs.record(value, ATTRIBUTES[0])
        reader.collect()
        assert points(exported.batches[-1], "h") == points(sdk_in.get_metrics_data(), "h")
    (point,) = points(exported.batches[-1], "h").values()
    assert point[0] == 1  # only the second collection's value
    # Nothing new since the last collection: nothing to export, as with the SDK.
    reader.collect()
    assert len(exported.batches) == 2
    assert sdk_in.get_metrics_data() is None


def test_local_series_are_exported_beside_the_sdks_in_their_scope() -> None:
    local, exported, reader, provider = local_reader()
    local.histogram("h", "s", "a histogram", BOUNDS).record(0.03)
    reader.collect()  # nothing from the SDK: the local series go out on their own
    (only,) = exported.batches
    ((scope,),) = [r.scope_metrics for r in only.resource_metrics]
    assert scope.scope.name == "test" and [m.name for m in scope.metrics] == ["h"]
    assert only.resource_metrics[0].resource.attributes["service.name"] == "t"

    provider.get_meter("test").create_counter("c").add(1)
    provider.get_meter("other").create_counter("d").add(1)
    reader.collect()
    scopes = {
        s.scope.name: sorted(m.name for m in s.metrics)
        for r in exported.batches[-1].resource_metrics
        for s in r.scope_metrics
    }
    assert scopes == {"test": ["c", "h"], "other": ["d"]}


def test_nothing_recorded_exports_nothing() -> None:
    local, exported, reader, _ = local_reader()
    local.histogram("h", "s", "a histogram", BOUNDS)
    reader.collect()
    assert exported.batches == []


def test_series_past_the_cardinality_limit_go_to_one_overflow_series() -> None:
    local, exported, reader, _ = local_reader()
    ours = local.histogram("h", "s", "a histogram", BOUNDS)
    for user in range(CARDINALITY_LIMIT + 10):
        ours.record(0.01, {Attr.USER_ID: str(user)})
    reader.collect()
    found = points(exported.batches[-1], "h")
    assert len(found) == CARDINALITY_LIMIT
    assert found[frozenset({("otel.metric.overflow", True)})][0] == 11


def test_chat_metrics_record_through_local_histograms() -> None:
    local, exported, reader, provider = local_reader()
    chat = ChatMetrics.create(provider.get_meter("test"), local)
    call = chat.model_call("offline", "m1")
    for _ in range(5):
        call.chunk()
    call.finished(response_model="m1", input_tokens=4, output_tokens=5, user_id="alice")
    chat.usage_cost(model="m1", user_id="alice", cost=0.25)
    reader.collect()
    (batch,) = exported.batches
    found = {m.name: m for r in batch.resource_metrics for s in r.scope_metrics for m in s.metrics}
    assert set(found) == {
        Metric.TIME_TO_FIRST_CHUNK,
        Metric.TIME_PER_OUTPUT_CHUNK,
        Metric.OPERATION_DURATION,
        Metric.TOKEN_USAGE,
        Metric.COST,  # a counter: the SDK's
    }
    for name, metric in found.items():
        assert metric.unit == METRICS[name].unit, name
    (per_chunk,) = found[Metric.TIME_PER_OUTPUT_CHUNK].data.data_points
    assert per_chunk.count == 4  # each chunk after the first
    assert dict(per_chunk.attributes or {}) == {
        Attr.GEN_AI_OPERATION: "chat",
        Attr.GEN_AI_PROVIDER: "offline",
        Attr.GEN_AI_REQUEST_MODEL: "m1",
    }


@pytest.mark.parametrize("value", [-0.5, math.inf, -math.inf, math.nan])
def test_a_value_the_sdk_drops_is_dropped(value: float) -> None:
    local, exported, reader, _ = local_reader()
    local.histogram("h", "s", "a histogram", BOUNDS).record(value)
    reader.collect()
    assert exported.batches == []
