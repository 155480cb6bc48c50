"""The flow view's ledger over HTTP: the fake Jaeger of the ledger's tests served as Jaeger's
query API answers (v3 search and trace reads, OTLP JSON), to count what an update costs on
the wire: the verdicts those of the in-memory fake, a handful of connections for hundreds of
requests, and the same connections again at the next update."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

from omni_trace.flowview.api import JAEGER_LIMITS
from omni_trace.flowview.data import SETTLE_S, Auditor, VerdictCache
from omni_trace.flowview.ledger import SEARCH_LIMIT, AuditLedger
from omni_trace.traces.jaeger import JaegerClient, TraceSpan, parse_otlp
from tests.omni_trace.flowview.test_ledger import (
    OFFSET_S,
    SESSION,
    Clock,
    FakeJaeger,
    ledger,
    message,
    total,
)
from tests.omni_trace.recorded import message_spans

KINDS = {"INTERNAL": 1, "SERVER": 2, "CLIENT": 3, "PRODUCER": 4, "CONSUMER": 5}
STATUS = {"UNSET": 0, "OK": 1, "ERROR": 2}


def _value(value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}
    if isinstance(value, float):
        return {"doubleValue": value}
    if isinstance(value, list):
        return {"arrayValue": {"values": [_value(v) for v in value]}}
    return {"stringValue": str(value)}


def _attributes(items: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"key": key, "value": _value(value)} for key, value in items.items()]


def otlp(traces: list[list[TraceSpan]]) -> dict[str, Any]:
    """Traces as Jaeger's v3 API writes them: each trace's spans by resource and scope."""
    elements = []
    for spans in traces:
        by_resource: dict[str, dict[str, list[dict[str, Any]]]] = {}
        resources: dict[str, dict[str, Any]] = {}
        for s in spans:
            key = json.dumps(s.resource, sort_keys=True)
            resources[key] = s.resource
            span: dict[str, Any] = {
                "traceId": s.trace_id,
                "spanId": s.span_id,
                "name": s.name,
                "kind": KINDS[s.kind],
                "startTimeUnixNano": str(s.start_ns),
                "endTimeUnixNano": str(s.end_ns),
                "attributes": _attributes(s.attributes),
                "events": [
                    {
                        "timeUnixNano": str(e.time_ns),
                        "name": e.name,
                        "attributes": _attributes(e.attributes),
                    }
                    for e in s.events
                ],
                "links": [
                    {
                        "traceId": link.trace_id,
                        "spanId": link.span_id,
                        "attributes": _attributes(link.attributes),
                    }
                    for link in s.links
                ],
                "status": {"code": STATUS[s.status], "message": s.status_message},
            }
            if s.parent_span_id:
                span["parentSpanId"] = s.parent_span_id
            by_resource.setdefault(key, {}).setdefault(s.scope, []).append(span)
        for key, scopes in by_resource.items():
            elements.append(
                {
                    "resource": {"attributes": _attributes(resources[key])},
                    "scopeSpans": [
                        {"scope": {"name": scope}, "spans": found}
                        for scope, found in scopes.items()
                    ],
                }
            )
    return {"resourceSpans": elements}


def _us(text: str) -> int:
    moment = datetime.fromisoformat(text)
    return int(moment.timestamp()) * 1_000_000 + moment.microsecond


class JaegerServer(ThreadingHTTPServer):
    """`/api/services`, `/api/v3/traces/{id}` and `/api/v3/traces?query...` over a FakeJaeger,
    with HTTP/1.1 keep-alive, counting connections and requests."""

    daemon_threads = True

    def __init__(self, fake: FakeJaeger) -> None:
        self.fake = fake
        self.connections = 0
        self.requests: list[str] = []
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: JaegerServer

    def setup(self) -> None:
        super().setup()
        with self.server.lock:
            self.server.connections += 1

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, body: Any) -> None:
        data = json.dumps(body, separators=(",", ":")).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        url = urlparse(self.path)
        fake = self.server.fake
        with self.server.lock:
            self.server.requests.append(url.path)
        not_found = {"error": {"httpCode": 404, "message": "No traces found"}}
        if url.path == "/api/services":
            self._send(200, {"data": fake.services()})
        elif url.path.startswith("/api/v3/traces/"):
            spans = fake.traces.get(url.path.rsplit("/", 1)[1])
            self._send(200 if spans else 404, {"result": otlp([spans])} if spans else not_found)
        elif url.path == "/api/v3/traces":
            q = {k: v[0] for k, v in parse_qs(url.query).items()}
            found = FakeJaeger.find_traces(
                fake,
                q["query.service_name"],
                q["query.operation_name"],
                start_us=_us(q["query.start_time_min"]),
                end_us=_us(q["query.start_time_max"]),
                min_duration_us=int(q.get("query.duration_min", "0us").removesuffix("us")),
                limit=int(q["query.search_depth"]),
                wanted=lambda _: False,  # whole traces are sent, never parsed here
            )
            traces = [fake.traces[t] for t in found.trace_ids]
            self._send(200 if traces else 404, {"result": otlp(traces)} if traces else not_found)
        else:
            self._send(404, not_found)


@pytest.fixture
def served() -> Iterator[JaegerServer]:
    server = JaegerServer(FakeJaeger())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_the_served_traces_parse_back_to_the_same_spans() -> None:
    for spans in (message_spans(), SESSION):
        assert parse_otlp(otlp([spans])) == spans


def test_an_update_over_http_judges_alike_on_a_handful_of_connections(
    served: JaegerServer,
) -> None:
    clock = Clock()
    count = SEARCH_LIMIT + 100  # one search's limit passed: its range is halved
    memory = FakeJaeger()
    for store in (served.fake, memory):
        for number in range(count):
            store.add(message(number, clock.now - 200 + number * 0.2, broken=number % 5 == 0))
    expected = ledger(memory, clock).update()

    client = JaegerClient(served.url, limits=JAEGER_LIMITS)
    auditor = Auditor(client, VerdictCache(10_000, settle_s=OFFSET_S + SETTLE_S))
    audit = AuditLedger(auditor, client, clock=clock)
    state = audit.update()
    assert not state.failed
    assert total(state) == count == state.judged
    assert state.totals == expected.totals and state.window == expected.window

    # Every message found by its searches: the only trace read by id is the session's.
    reads = [p for p in served.requests if p.startswith("/api/v3/traces/")]
    assert reads == [f"/api/v3/traces/{SESSION[0].trace_id}"]
    searches = served.requests.count("/api/v3/traces")
    assert searches > 20 and served.fake.full_answers >= 2
    # The searches ran one after another, the reads by id (pending messages) at most 8 at a
    # time: a connection or two, each kept for the next request and the next update.
    assert served.connections <= 2 < 20 < len(served.requests)
    connections, requests = served.connections, len(served.requests)
    clock.now += 15
    assert total(audit.update()) == count
    assert len(served.requests) > requests and served.connections == connections
    client.close()


def test_reads_by_id_side_by_side_share_the_pool(served: JaegerServer) -> None:
    clock = Clock()
    count = 100
    # Unsettled at the first update (they end after its settled time): pending, then read by
    # id when due, 8 at a time.
    for number in range(count):
        served.fake.add(message(number, clock.now - SETTLE_S + 3, length_s=20))
    client = JaegerClient(served.url, limits=JAEGER_LIMITS)
    auditor = Auditor(client, VerdictCache(10_000, settle_s=OFFSET_S + SETTLE_S))
    audit = AuditLedger(auditor, client, clock=clock)
    assert total(audit.update()) == 0
    clock.now += 15
    assert total(audit.update()) == count
    reads = [p for p in served.requests if p.startswith("/api/v3/traces/")]
    assert len(reads) == count + 2  # and the session trace, at each update
    assert served.connections <= 8 + 1 < count
    client.close()
