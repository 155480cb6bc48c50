"""A small client for Jaeger v2's query APIs: traces by id (/api/v3, with links), tag search,
and the v3 search that answers with the whole traces it found (`find_traces`).

A span reaches Jaeger only when it ends; Traefik's entry span of a WebSocket ends when the
connection closes. `wait_for_trace` polls until a named condition holds.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx

from omni_trace.errors import CliError

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


class JaegerError(CliError, RuntimeError):
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


@dataclass(frozen=True)
class FoundTraces:
    """A trace search's answer: the id of every trace it matched, in its order, and the spans
    (sorted by start) of those the caller wanted parsed."""

    trace_ids: list[str]
    traces: dict[str, list[TraceSpan]]


# Jaeger's v3 answer, as its HTTP gateway writes it (compact `jsonpb`): one document, or more
# one after another, each `{"result":{"resourceSpans":[...]}}`, each element of resourceSpans
# the spans of one resource in one trace (the gateway copies each trace's elements apart), its
# first key "resource". Inside a JSON string every `"` is escaped, so `{"resource":` and
# `"traceId":"` in the raw bytes are keys, never text of a span.
_DOC_HEAD = re.compile(rb'\s*\{"result":\{"resourceSpans":\[')
_DOC_TAIL = re.compile(rb"\]\}\}\s*")
_ELEMENT = re.compile(rb'\{"resource":')
_TRACE_ID = re.compile(rb'"traceId":"([^"]*)"')
_SCOPE_SPANS = b'"scopeSpans":'


def _elements(body: bytes) -> list[tuple[str | None, int, int]] | None:
    """The resourceSpans elements of a v3 answer without decoding it: (trace id of its first
    span, start, end) each. None: not the layout above (the caller decodes it all)."""
    starts = [m.start() for m in _ELEMENT.finditer(body)]
    head = _DOC_HEAD.match(body)
    if not starts or head is None or head.end() != starts[0]:
        return None
    found: list[tuple[str | None, int, int]] = []
    for i, start in enumerate(starts):
        if i + 1 < len(starts):
            end = starts[i + 1]
            if body[end - 1] == ord(","):
                stop = end - 1
            else:  # the next document's first element
                stop = body.rfind(b"]}}", start, end)
                after = _DOC_HEAD.match(body, stop + 3) if stop >= 0 else None
                if after is None or after.end() != end:
                    return None
        else:
            stop = body.rfind(b"]}}", start)
            if stop < 0 or _DOC_TAIL.fullmatch(body, stop) is None:
                return None
        # One element each: an element without its "resource" key would have joined the one
        # before, with two "scopeSpans".
        if body.count(_SCOPE_SPANS, start, stop) > 1:
            return None
        # Resource and scope come before the spans, and a span's traceId before its links.
        first = _TRACE_ID.search(body, start, stop)
        trace_id = _hex_id(first.group(1).decode(), 16) if first else None
        found.append((trace_id, start, stop))
    return found


def _by_trace(spans: list[TraceSpan]) -> dict[str, list[TraceSpan]]:
    traces: dict[str, list[TraceSpan]] = {}
    for span in spans:  # sorted by start: so is each trace's share
        traces.setdefault(span.trace_id, []).append(span)
    return traces


def _wanted_once(wanted: Callable[[str], bool] | None) -> Callable[[str], bool]:
    """`wanted` asked once per trace id (it may claim the id: a second call would say no)."""
    answers: dict[str, bool] = {}

    def ask(trace_id: str) -> bool:
        if trace_id not in answers:
            answers[trace_id] = wanted(trace_id) if wanted is not None else True
        return answers[trace_id]

    return ask


def parse_otlp_documents(
    text: str | bytes, wanted: Callable[[str], bool] | None = None
) -> FoundTraces:
    """The traces of one or more OTLP JSON documents one after another (the v3 API's answer,
    each `{"result": ...}`), decoded in full; spans built only for the trace ids `wanted`
    says yes to (asked once per id, in the answer's order)."""
    if isinstance(text, bytes):
        text = text.decode()
    decoder, text, pos = json.JSONDecoder(), text.strip(), 0
    ask = _wanted_once(wanted)
    trace_ids: dict[str, None] = {}
    kept: list[dict[str, Any]] = []
    while pos < len(text):
        doc, pos = decoder.raw_decode(text, pos)
        while pos < len(text) and text[pos].isspace():
            pos += 1
        for element in doc.get("result", doc).get("resourceSpans", []):
            scopes = []
            for scope_spans in element.get("scopeSpans", []):
                spans = []
                for span in scope_spans.get("spans", []):
                    trace_id = _hex_id(span["traceId"], 16) or ""
                    trace_ids.setdefault(trace_id)
                    if ask(trace_id):
                        spans.append(span)
                if spans:
                    scopes.append(scope_spans | {"spans": spans})
            if scopes:
                kept.append(element | {"scopeSpans": scopes})
    return FoundTraces(list(trace_ids), _by_trace(parse_otlp({"resourceSpans": kept})))


def parse_otlp_answer(body: bytes, wanted: Callable[[str], bool] | None = None) -> FoundTraces:
    """A v3 search's answer: every trace id in it, and the spans of the traces `wanted` says
    yes to (asked once per id, in the answer's order). Only their elements are decoded: a
    trace the caller has already (another layer's search returned it) costs a scan of its
    bytes, not a decoding. An answer laid out otherwise is decoded in full
    (`parse_otlp_documents`)."""
    elements = _elements(body)
    if elements is None:
        return parse_otlp_documents(body, wanted)
    ask = _wanted_once(wanted)
    trace_ids = list(dict.fromkeys(t for t, _, _ in elements if t is not None))
    keep = {t for t in trace_ids if ask(t)}
    chosen = [body[start:stop] for t, start, stop in elements if t in keep]
    if not chosen:
        return FoundTraces(trace_ids, {})
    decoded = json.loads(b"[" + b",".join(chosen) + b"]")
    traces = _by_trace(parse_otlp({"resourceSpans": decoded}))
    if traces.keys() != keep:
        # Not one trace per element after all: decode it all (the ids already asked for
        # are answered again as they were).
        return parse_otlp_documents(body, ask)
    return FoundTraces(trace_ids, traces)


def _is_json_object(body: bytes) -> bool:
    """Jaeger's own 404 (JSON), not a path no server here answers (text)."""
    try:
        return isinstance(json.loads(body), dict)
    except ValueError:
        return False


def _rfc3339(unix_us: int) -> str:
    """Unix microseconds as Jaeger's v3 API reads a time (RFC 3339, UTC, to the µs)."""
    seconds, micros = divmod(unix_us, 1_000_000)
    moment = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{moment}.{micros:06d}Z"


class JaegerClient:
    def __init__(
        self, query_url: str, timeout: float = 5.0, *, limits: httpx.Limits | None = None
    ) -> None:
        """`limits`: the connection pool's (httpx's defaults: idle connections closed after
        5 s; a caller that asks every 15 s keeps them longer)."""
        self.query_url = query_url.rstrip("/")
        if limits is None:
            self._http = httpx.Client(timeout=timeout)
        else:
            self._http = httpx.Client(timeout=timeout, limits=limits)

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

    def find_traces(
        self,
        service: str,
        operation: str | None = None,
        *,
        start_us: int,
        end_us: int,
        min_duration_us: int = 0,
        limit: int = 100,
        wanted: Callable[[str], bool] | None = None,
    ) -> FoundTraces:
        """Traces with a span of `service` (named `operation`) that started within
        [start_us, end_us] (Unix microseconds, both included) and lasted at least
        `min_duration_us`: the newest `limit`, whole, from Jaeger's v3 search. Spans are
        parsed only for the trace ids `wanted` says yes to (see `parse_otlp_answer`)."""
        params: dict[str, Any] = {
            "query.service_name": service,
            "query.start_time_min": _rfc3339(start_us),
            "query.start_time_max": _rfc3339(end_us),
            # Jaeger up to 1.76 reads num_traces, later ones search_depth (num_traces kept
            # as an alias): the same number under both names.
            "query.num_traces": limit,
            "query.search_depth": limit,
        }
        if operation:
            params["query.operation_name"] = operation
        if min_duration_us > 0:
            params["query.duration_min"] = f"{min_duration_us}us"
        response = self._get("/api/v3/traces", params)
        if response.status_code == 404 and _is_json_object(response.content):
            return FoundTraces([], {})  # the gateway's error: "No traces found"
        response.raise_for_status()
        return parse_otlp_answer(response.content, wanted)

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
