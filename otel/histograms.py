"""Histograms aggregated in this process and exported with the SDK's metrics.

A record through the Python SDK's `Histogram.record` costs about 5-6 us with the GenAI
conventions' four or five attributes (the SDK copies and checks the attributes into a
`Measurement`, then sorts and hashes them to find the series, per record). OMNI2 records
about thirty values per answered message, one per streamed chunk among them (the
conventions define `gen_ai.client.operation.time_per_output_chunk` per chunk), so the SDK's
path cost every message about 0.17 ms of the event loop's time, recorded or not.

`LocalHistogram` keeps the same explicit-bucket state the SDK's default histogram
aggregation keeps (count, sum, min, max, bucket counts; a value v lands in the first bucket
whose bound is >= v), per attribute set, at under a microsecond a record. `LocalMetricReader`
adds those series to each collection as ordinary OTLP histograms of the meter's scope, so a
collector, Prometheus and Grafana see what the SDK would have exported. Attribute values
must be str, bool, int or float (ours are); the series of one instrument are capped as the
SDK caps them (2,000, then one overflow series).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from bisect import bisect_left
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol, cast

from opentelemetry.sdk.metrics import Histogram as SdkHistogram
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricExporter,
    MetricsData,
    PeriodicExportingMetricReader,
    ResourceMetrics,
    ScopeMetrics,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

_log = logging.getLogger(__name__)

AttributeValue = str | bool | int | float
# The SDK's default cardinality limit per instrument, and its overflow series.
CARDINALITY_LIMIT = 2000
_OVERFLOW: dict[str, AttributeValue] = {"otel.metric.overflow": True}
_OVERFLOW_KEY = frozenset(_OVERFLOW.items())


class Recorder(Protocol):
    """What records a histogram's values: the SDK's instrument or a `LocalHistogram`."""

    def record(
        self, amount: float, attributes: Mapping[str, AttributeValue] | None = None
    ) -> None: ...


class _Series:
    __slots__ = ("attributes", "count", "counts", "max", "min", "start_ns", "sum")

    def __init__(self, attributes: Mapping[str, AttributeValue], buckets: int, start_ns: int):
        self.attributes = dict(attributes)
        self.start_ns = start_ns
        self.counts = [0] * buckets
        self.count = 0
        self.sum = 0.0
        self.min = math.inf
        self.max = -math.inf


class LocalHistogram:
    """One histogram instrument: `record` as the SDK's `Histogram.record` (negative and
    non-finite values are dropped, as the SDK drops them)."""

    def __init__(self, name: str, unit: str, description: str, bounds: Sequence[float]):
        self.name = name
        self.unit = unit
        self.description = description
        self.bounds = tuple(float(b) for b in bounds)
        self._series: dict[frozenset[tuple[str, AttributeValue]], _Series] = {}
        # Records come from the event loop, collections from the reader's thread: a series
        # is never read half-updated.
        self._lock = threading.Lock()

    def record(self, amount: float, attributes: Mapping[str, AttributeValue] | None = None) -> None:
        if not 0 <= amount < math.inf:  # also false for NaN
            _log.warning("histogram %s: dropped %r (negative or not finite)", self.name, amount)
            return
        key = frozenset(attributes.items()) if attributes else frozenset()
        index = bisect_left(self.bounds, amount)
        with self._lock:
            series = self._series.get(key) or self._new_series(key, attributes or {})
            series.counts[index] += 1
            series.count += 1
            series.sum += amount
            if amount < series.min:
                series.min = amount
            if amount > series.max:
                series.max = amount

    def _new_series(
        self, key: frozenset[tuple[str, AttributeValue]], attributes: Mapping[str, AttributeValue]
    ) -> _Series:
        if len(self._series) >= CARDINALITY_LIMIT - 1:
            key, attributes = _OVERFLOW_KEY, _OVERFLOW
            if key in self._series:
                return self._series[key]
        series = _Series(attributes, len(self.bounds) + 1, time.time_ns())
        self._series[key] = series
        return series

    def collect(self, now_ns: int, temporality: AggregationTemporality) -> Metric | None:
        """The series as one OTLP histogram; under DELTA temporality the counts start again
        from here."""
        points = []
        with self._lock:
            for key, series in list(self._series.items()):
                if series.count == 0:
                    continue
                points.append(
                    HistogramDataPoint(
                        attributes=dict(series.attributes),
                        start_time_unix_nano=series.start_ns,
                        time_unix_nano=now_ns,
                        count=series.count,
                        sum=series.sum,
                        bucket_counts=tuple(series.counts),
                        explicit_bounds=self.bounds,
                        min=series.min,
                        max=series.max,
                    )
                )
                if temporality is AggregationTemporality.DELTA:
                    self._series[key] = _Series(series.attributes, len(series.counts), now_ns)
        if not points:
            return None
        return Metric(
            name=self.name,
            description=self.description,
            unit=self.unit,
            data=Histogram(data_points=points, aggregation_temporality=temporality),
        )


class LocalHistograms:
    """The local histograms of one meter scope, created by name (once each)."""

    def __init__(self, scope: str) -> None:
        self.scope = scope
        self.exported = False  # a reader exports them (set by LocalMetricReader)
        self._histograms: dict[str, LocalHistogram] = {}
        self._lock = threading.Lock()

    def histogram(
        self, name: str, unit: str, description: str, bounds: Sequence[float]
    ) -> LocalHistogram:
        with self._lock:
            found = self._histograms.get(name)
            if found is None:
                found = self._histograms[name] = LocalHistogram(name, unit, description, bounds)
            return found

    def collect(self, temporality: AggregationTemporality) -> list[Metric]:
        now_ns = time.time_ns()
        with self._lock:
            histograms = list(self._histograms.values())
        return [m for h in histograms if (m := h.collect(now_ns, temporality)) is not None]


def merge(
    data: MetricsData | None, scope: str, local: Iterable[Metric], resource: Resource
) -> MetricsData | None:
    """`data` with the local metrics added to `scope`'s metrics (made if the SDK had
    nothing for it)."""
    added = list(local)
    if not added:
        return data
    if data is None or not data.resource_metrics:
        own = ScopeMetrics(InstrumentationScope(scope), added, schema_url="")
        return MetricsData([ResourceMetrics(resource, [own], schema_url="")])
    first, *rest = data.resource_metrics
    scopes = list(first.scope_metrics)
    for i, found in enumerate(scopes):
        if found.scope.name == scope:
            scopes[i] = ScopeMetrics(found.scope, [*found.metrics, *added], found.schema_url)
            break
    else:
        scopes.append(ScopeMetrics(InstrumentationScope(scope), added, schema_url=""))
    merged = ResourceMetrics(first.resource, scopes, first.schema_url)
    return MetricsData([merged, *rest])


class LocalMetricReader(PeriodicExportingMetricReader):
    """The SDK's periodic reader, each collection completed with the local histograms in
    the temporality the exporter asks for histograms."""

    def __init__(
        self,
        exporter: MetricExporter,
        local: LocalHistograms,
        resource: Resource,
        **options: Any,
    ) -> None:
        super().__init__(exporter, **options)
        self._local = local
        self._resource = resource
        local.exported = True
        # The exporter's preference for histograms (the SDK keys it by its own subclass).
        self._temporality = next(
            temporality
            for kind, temporality in self._instrument_class_temporality.items()
            if issubclass(kind, SdkHistogram)
        )

    # MetricReader marks `collect` final, but it hands the SDK's collection on only when that
    # holds something, and the local series must go out even when it holds nothing (the
    # dashboard's only histogram is local). This is MetricReader.collect plus the merge; the
    # unit tests run it against the SDK pinned in the lock.
    def collect(self, timeout_millis: float = 10_000) -> None:  # type: ignore[misc]
        if self._collect is None:
            super().collect(timeout_millis)
            return
        started = time.perf_counter()
        try:
            # The SDK's annotation of the callback says Iterable[Metric]; it returns this.
            data = cast(MetricsData | None, self._collect(self, timeout_millis=timeout_millis))  # type: ignore[call-arg]
        finally:
            self._metrics.record_collection(time.perf_counter() - started)
        local = self._local.collect(self._temporality)
        merged = merge(data, self._local.scope, local, self._resource)
        if merged is not None:
            self._receive_metrics(merged, timeout_millis=timeout_millis)
