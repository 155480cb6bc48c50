"""A small client for Jaeger v2's query APIs: traces by id (/api/v3, with links) and tag search.

A span reaches Jaeger only when it ends; Traefik's entry span of a WebSocket ends when the
connection closes. `wait_for_trace` polls until a named condition holds.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx

_KINDS = {
    1: "INTERNAL",
    2: "SERVER",
    3: "CLIENT",
    4: "PRODUCER",
    5: "CONSUMER",
    "SPAN_KIND_INTERNAL": "INTERNAL",
    "SPAN_KIND_SERVER": "SERVER",
    "SPAN_KIND_CLIENT": "CLIENT",
    "SPAN_KIND_PRODUCER": "PRODUCER",
    "SPAN_KIND_CONSUMER": "CONSUMER",
}
_STATUS = {
    0: "UNSET",
    1: "OK",
    2: "ERROR",
    "STATUS_CODE_UNSET": "UNSET",
    "STATUS_CODE_OK": "OK",
    "STATUS_CODE_ERROR": "ERROR",
}


class JaegerError(RuntimeError):
    pass


class TraceTimeout(JaegerError):
    def __init__(self, message: str, spans: list[TraceSpan]) -> None:
        super().__init__(message)
        self.spans = spans


@dataclass(frozen=True)
class SpanLink:
    trace_id: str
    span_id: str
    attributes: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SpanEvent:
    name: str
    time_ns: int
    attributes: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TraceSpan:
    trace_id: str
    span_id: str
    parent_span_id: str | None
    name: str
    service: str
    kind: str
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    links: tuple[SpanLink, ...] = ()
    status: str = "UNSET"
    status_message: str = ""
    events: tuple[SpanEvent, ...] = ()
    scope: str = ""  # the instrumentation scope: which library made the span
    # The process's resource attributes (service.instance.id tells replicas apart).
    resource: dict[str, Any] = field(default_factory=dict)

    @property
    def duration_ms(self) -> float:
        return (self.end_ns - self.start_ns) / 1e6

    @property
    def event_names(self) -> tuple[str, ...]:
        return tuple(e.name for e in self.events)

    def event(self, name: str) -> SpanEvent | None:
        """The span's first event called `name`."""
        return next((e for e in self.events if e.name == name), None)

    def event_offset_ms(self, name: str) -> float | None:
        """Milliseconds from the span's start to its first event called `name`."""
        for event in self.events:
            if event.name == name:
                return (event.time_ns - self.start_ns) / 1e6
        return None


def _hex_id(value: str | None, size: int) -> str | None:
    """Jaeger's v3 JSON may give ids as hex or base64; normalise to lowercase hex."""
    if not value:
        return None
    if len(value) == size * 2:
        try:
            int(value, 16)
            return value.lower()
        except ValueError:
            pass
    try:
        return base64.b64decode(value).hex()
    except (binascii.Error, ValueError):
        return value


def _value(v: dict[str, Any]) -> Any:
    for key in ("stringValue", "boolValue", "doubleValue"):
        if key in v:
            return v[key]
    if "intValue" in v:
        return int(v["intValue"])
    if "arrayValue" in v:
        return [_value(x) for x in v["arrayValue"].get("values", [])]
    return None


def _attributes(items: Iterable[dict[str, Any]] | None) -> dict[str, Any]:
    # Jaeger adds "@jaeger@warnings" (clock-skew notes) to spans it returns: not ours.
    return {
        a["key"]: _value(a.get("value", {}))
        for a in items or []
        if not a["key"].startswith("@jaeger@")
    }


def _events(items: Iterable[dict[str, Any]]) -> tuple[SpanEvent, ...]:
    # In time order: Jaeger does not keep the order they were recorded in (a span's checks).
    events = (
        SpanEvent(
            e.get("name", ""), int(e.get("timeUnixNano", 0)), _attributes(e.get("attributes"))
        )
        for e in items
    )
    return tuple(sorted(events, key=lambda e: e.time_ns))


def parse_otlp(data: dict[str, Any]) -> list[TraceSpan]:
    """Spans of an OTLP JSON document (`/api/v3/traces/{id}` answers one)."""
    spans: list[TraceSpan] = []
    for resource_spans in data.get("resourceSpans", []):
        resource = _attributes(resource_spans.get("resource", {}).get("attributes"))
        service = str(resource.get("service.name", "unknown"))
        for scope_spans in resource_spans.get("scopeSpans", []):
            scope = str(scope_spans.get("scope", {}).get("name", ""))
            for s in scope_spans.get("spans", []):
                status = s.get("status", {})
                spans.append(
                    TraceSpan(
                        trace_id=_hex_id(s["traceId"], 16) or "",
                        span_id=_hex_id(s["spanId"], 8) or "",
                        parent_span_id=_hex_id(s.get("parentSpanId"), 8),
                        name=s.get("name", ""),
                        service=service,
                        kind=_KINDS.get(s.get("kind", 1), "INTERNAL"),
                        start_ns=int(s.get("startTimeUnixNano", 0)),
                        end_ns=int(s.get("endTimeUnixNano", 0)),
                        attributes=_attributes(s.get("attributes")),
                        links=tuple(
                            SpanLink(
                                _hex_id(link["traceId"], 16) or "",
                                _hex_id(link["spanId"], 8) or "",
                                _attributes(link.get("attributes")),
                            )
                            for link in s.get("links", [])
                        ),
                        status=_STATUS.get(status.get("code", 0), "UNSET"),
                        status_message=status.get("message", ""),
                        events=_events(s.get("events", [])),
                        scope=scope,
                        resource=resource,
                    )
                )
    spans.sort(key=lambda span: span.start_ns)
    return spans


class JaegerClient:
    def __init__(self, query_url: str, timeout: float = 5.0) -> None:
        self.query_url = query_url.rstrip("/")
        self._http = httpx.Client(timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> JaegerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _get(self, path: str, params: dict[str, Any] | None = None) -> httpx.Response:
        try:
            return self._http.get(f"{self.query_url}{path}", params=params)
        except httpx.HTTPError as err:
            raise JaegerError(f"Jaeger query API at {self.query_url} unreachable: {err}") from err

    def services(self) -> list[str]:
        response = self._get("/api/services")
        response.raise_for_status()
        return sorted(response.json().get("data") or [])

    def get_trace(self, trace_id: str) -> list[TraceSpan]:
        """Every span Jaeger holds for a trace ([] if none yet)."""
        response = self._get(f"/api/v3/traces/{trace_id}")
        if response.status_code == 404:
            return []
        response.raise_for_status()
        spans: list[TraceSpan] = []
        # The v3 API streams one JSON document per chunk of the trace.
        decoder, text, pos = json.JSONDecoder(), response.text.strip(), 0
        while pos < len(text):
            doc, pos = decoder.raw_decode(text, pos)
            while pos < len(text) and text[pos].isspace():
                pos += 1
            spans += parse_otlp(doc.get("result", doc))
        return sorted(spans, key=lambda span: span.start_ns)

    def find_trace_ids(
        self,
        service: str,
        tags: dict[str, str] | None = None,
        *,
        lookback: str = "1h",
        limit: int = 100,
        operation: str | None = None,
        start_us: int | None = None,
        end_us: int | None = None,
    ) -> list[str]:
        """Trace ids with a span of `service` carrying all `tags` (Jaeger's tag search),
        optionally within [start_us, end_us] (Unix microseconds) instead of `lookback`."""
        params: dict[str, Any] = {"service": service, "lookback": lookback, "limit": limit}
        if start_us is not None and end_us is not None:
            params |= {"start": start_us, "end": end_us, "lookback": "custom"}
        if tags:
            params["tags"] = json.dumps(tags)
        if operation:
            params["operation"] = operation
        response = self._get("/api/traces", params)
        if response.status_code == 404:
            return []
        response.raise_for_status()
        return [t["traceID"] for t in response.json().get("data") or []]

    def wait_for_trace(
        self,
        trace_id: str,
        until: Callable[[list[TraceSpan]], bool],
        *,
        what: str,
        timeout: float = 20.0,
        interval: float = 0.25,
    ) -> list[TraceSpan]:
        """Poll a trace until `until(spans)` holds; TraceTimeout names `what` was awaited."""
        deadline = time.monotonic() + timeout
        spans: list[TraceSpan] = []
        while True:
            spans = self.get_trace(trace_id)
            if spans and until(spans):
                return spans
            if time.monotonic() >= deadline:
                raise TraceTimeout(
                    f"trace {trace_id}: {what} not seen within {timeout:.0f} s "
                    f"({len(spans)} spans so far)",
                    spans,
                )
            time.sleep(interval)


def has_services(*services: str) -> Callable[[list[TraceSpan]], bool]:
    """Condition: the trace holds spans of every named service."""
    return lambda spans: set(services) <= {s.service for s in spans}


def has_spans_named(*wanted: tuple[str, str]) -> Callable[[list[TraceSpan]], bool]:
    """Condition: the trace holds a span of each (service, span name). A span reaches Jaeger
    only when it ends, and each service exports in its own batches: wait for what you assert."""
    return lambda spans: set(wanted) <= {(s.service, s.name) for s in spans}


def has_spans(count: int) -> Callable[[list[TraceSpan]], bool]:
    return lambda spans: len(spans) >= count
