"""The two telemetry paths into Jaeger, attacked through the real stack.

The public OTLP/HTTP path (what every browser can reach) takes spans of the client services
only, each stamped chat.telemetry.path=public, and no metrics; what it refuses is counted in
Jaeger's own telemetry. The internal path takes our services' telemetry only with the run's
credential. The legacy `jaeger` receiver (UDP, no credential) takes only the legacy services'
names. Requests are built with opentelemetry-proto, as an attacker would; what was stored is
read back from Jaeger's query API.
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import httpx
import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import (
    Gauge,
    Metric,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
)
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from omni_trace.stack import Stack
from omni_trace.stack.plugin import ChatFactory
from omni_trace.traces import (
    AuditQuery,
    JaegerClient,
    TraceFetcher,
    TraceSpan,
    assert_message_chain,
    run_audit,
)
from otel.names import Attr, Service, SpanName
from tests.whole_stack.conftest import running_stack
from tests.whole_stack.polling import until

pytestmark = [pytest.mark.stack, pytest.mark.slow]

PATH = "chat.telemetry.path"  # stamped by the collector on the public path
PROTOBUF = {"Content-Type": "application/x-protobuf"}


# -- building OTLP requests as a client would --------------------------------------------------


@dataclass
class Forged:
    """One span to send: its service, name, ids, parent and attributes."""

    service: str
    name: str
    trace_id: bytes = field(default_factory=lambda: secrets.token_bytes(16))
    span_id: bytes = field(default_factory=lambda: secrets.token_bytes(8))
    parent: bytes = b""
    attributes: dict[str, str] = field(default_factory=dict)
    kind: int = Span.SPAN_KIND_INTERNAL
    events: int = 0
    links: int = 0

    @property
    def trace_hex(self) -> str:
        return self.trace_id.hex()

    def child(self, service: str, name: str, **attributes: str) -> Forged:
        return Forged(
            service,
            name,
            self.trace_id,
            parent=self.span_id,
            attributes={**self.attributes, **attributes},
            kind=Span.SPAN_KIND_SERVER,
        )

    def proto(self) -> Span:
        now = time.time_ns()
        span = Span(
            trace_id=self.trace_id,
            span_id=self.span_id,
            parent_span_id=self.parent,
            name=self.name,
            kind=self.kind,  # type: ignore[arg-type]
            start_time_unix_nano=now - 5_000_000,
            end_time_unix_nano=now,
            attributes=[_kv(k, v) for k, v in self.attributes.items()],
        )
        for n in range(self.events):
            span.events.add(name=f"event {n}", time_unix_nano=now)
        for _ in range(self.links):
            span.links.add(trace_id=secrets.token_bytes(16), span_id=secrets.token_bytes(8))
        return span


def _kv(key: str, value: str) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(string_value=value))


def _traces_request(spans: Sequence[Forged]) -> bytes:
    """One ExportTraceServiceRequest: a resource per service, in the order first seen."""
    by_service: dict[str, list[Span]] = {}
    for span in spans:
        by_service.setdefault(span.service, []).append(span.proto())
    return ExportTraceServiceRequest(
        resource_spans=[
            ResourceSpans(
                resource=Resource(attributes=[_kv("service.name", service)]),
                scope_spans=[ScopeSpans(spans=protos)],
            )
            for service, protos in by_service.items()
        ]
    ).SerializeToString()


def _metrics_request(service: str, name: str) -> bytes:
    point = NumberDataPoint(time_unix_nano=time.time_ns(), as_double=1.0)
    return ExportMetricsServiceRequest(
        resource_metrics=[
            ResourceMetrics(
                resource=Resource(attributes=[_kv("service.name", service)]),
                scope_metrics=[
                    ScopeMetrics(metrics=[Metric(name=name, gauge=Gauge(data_points=[point]))])
                ],
            )
        ]
    ).SerializeToString()


def _post(url: str, body: bytes, **headers: str) -> httpx.Response:
    return httpx.post(url, content=body, headers={**PROTOBUF, **headers}, timeout=10)


def _public(stack: Stack) -> str:
    return f"{stack.info.otlp_http_endpoint}/v1/traces"


def _internal(stack: Stack) -> str:
    return f"{stack.info.otlp_internal_endpoint}/v1/traces"


# -- reading what Jaeger kept and what it refused ------------------------------------------------

_FILTERED = re.compile(
    r"^otelcol_processor_filter_spans_filtered_total\{(?P<labels>[^}]*)\} (?P<value>\S+)$"
)


def refused_spans(stack: Stack, path: str = "filter/public") -> float:
    """The spans a filter refused, summed over each Jaeger process's own metrics endpoint
    (what Prometheus scrapes: the `jaeger` job's targets)."""
    total = 0.0
    for url in stack.info.jaeger_telemetry_urls:
        for line in httpx.get(url, timeout=10).text.splitlines():
            found = _FILTERED.match(line)
            if found and f'filter="{path}"' in found["labels"]:
                total += float(found["value"])
    return total


def _stored(jaeger: JaegerClient, control: Forged) -> list[TraceSpan]:
    """The positive control's trace once Jaeger holds its span (so a request sent with it, or
    before it, has been through the pipeline: what is missing then was refused)."""
    spans = jaeger.wait_for_trace(
        control.trace_hex,
        lambda spans: any(s.span_id == control.span_id.hex() for s in spans),
        what=f"the control span {control.service}:{control.name}",
    )
    return spans


def _settled(stack: Stack, before: float, expected: float) -> float:
    """The refused count once it reached `expected` refusals more than `before` (the filter
    counts as it drops: it is there by the time the batch's other spans are stored)."""
    until(
        f"{expected:g} more refused spans (from {before:g})",
        lambda: refused_spans(stack) >= before + expected,
        timeout_s=10,
    )
    time.sleep(0.5)  # and no more than that
    return refused_spans(stack) - before


# -- (a) a lone span as omni2 -------------------------------------------------------------------


def test_a_span_as_omni2_on_the_public_path_is_not_stored(
    stack: Stack, omni_jaeger: JaegerClient
) -> None:
    before = refused_spans(stack)
    forged = Forged(Service.OMNI2, SpanName.TURN, kind=Span.SPAN_KIND_SERVER)
    # A client span in the same request, with the stamp pre-set to another value.
    control = Forged(Service.CHAT_CLIENT, SpanName.MESSAGE, attributes={PATH: "internal"})
    answer = _post(_public(stack), _traces_request([forged, control]))
    assert answer.status_code == 200, answer.text
    (kept,) = _stored(omni_jaeger, control)
    assert kept.attributes[PATH] == "public"  # upserted: the client cannot choose it
    assert omni_jaeger.get_trace(forged.trace_hex) == []
    assert _settled(stack, before, 1) == 1


# -- (b) a forged chain into a real conversation ------------------------------------------------


async def test_a_forged_chain_keeps_only_its_client_span(
    stack: Stack, omni_chat: ChatFactory, omni_jaeger: JaegerClient, omni_traces: TraceFetcher
) -> None:
    async with omni_chat("alice") as chat:
        reply = await chat.send("A real message")
    conversation = chat.conversation_id
    assert reply.ok and conversation
    assert_message_chain(*omni_traces.message(reply))
    before = refused_spans(stack)
    audit = AuditQuery(conversation_id=conversation)
    verdicts = [(r.trace_id, r.status) for r in run_audit(omni_jaeger, audit, settle_s=0)]

    ids = {Attr.CONVERSATION_ID: conversation, Attr.USER_ID: "alice"}
    message = Forged(Service.CHAT_CLIENT, SpanName.MESSAGE, attributes=ids)
    relay = message.child(Service.DASHBOARD, SpanName.RELAY)
    turn = relay.child(Service.OMNI2, SpanName.TURN)
    answer = _post(_public(stack), _traces_request([message, relay, turn]))
    assert answer.status_code == 200, answer.text

    spans = _stored(omni_jaeger, message)
    assert [(s.service, s.name) for s in spans] == [(Service.CHAT_CLIENT, SpanName.MESSAGE)]
    assert spans[0].attributes[PATH] == "public"
    assert _settled(stack, before, 2) == 2
    # Nothing of the forged trace is left for a tag search to find as a server's.
    for service in (Service.DASHBOARD, Service.OMNI2):
        found = omni_jaeger.find_trace_ids(service, {Attr.CONVERSATION_ID: conversation})
        assert message.trace_hex not in found, service
    # And a client span posted into the victim's own message trace, with an error.
    intruder = Forged(
        Service.CHAT_CLIENT,
        SpanName.MESSAGE,
        bytes.fromhex(reply.trace_id),
        attributes={**ids, Attr.ERROR_TYPE: "forged"},
    )
    assert _post(_public(stack), _traces_request([intruder])).status_code == 200
    omni_traces.wait(
        reply.trace_id,
        lambda found: any(s.span_id == intruder.span_id.hex() for s in found),
        what="the intruder's span",
    )
    # The victim's audit is what it was: the forged message is no message of the
    # conversation, and the intruder is left out of the victim's as foreign.
    reports = run_audit(omni_jaeger, audit, settle_s=0)
    assert [(r.trace_id, r.status) for r in reports] == verdicts
    (victim,) = reports
    assert victim.foreign == [f"{Service.CHAT_CLIENT} {SpanName.MESSAGE} {intruder.span_id.hex()}"]


# -- (c) metrics and absurd sizes -----------------------------------------------------------------


def test_the_public_path_refuses_metrics(stack: Stack) -> None:
    name = f"forged_{secrets.token_hex(4)}"
    body = _metrics_request(Service.OMNI2, name)
    answer = httpx.post(
        f"{stack.info.otlp_http_endpoint}/v1/metrics", content=body, headers=PROTOBUF
    )
    # No metrics pipeline on the public receiver: it does not even serve the path.
    assert answer.status_code == 404, answer.text
    # Through the internal path with the credential, the same series is taken (a control).
    taken = _post(
        f"{stack.info.otlp_internal_endpoint}/v1/metrics",
        _metrics_request(Service.OMNI2, f"{name}_control"),
        Authorization=stack.otlp_authorization,
    )
    assert taken.status_code == 200, taken.text
    metrics_url = f"http://{stack.settings.host}:{stack.ports.jaeger_metrics}/metrics"
    until("the control series", lambda: f"{name}_control" in httpx.get(metrics_url).text)
    assert f"{name} " not in httpx.get(metrics_url).text
    assert f"{name}{{" not in httpx.get(metrics_url).text


@pytest.fixture(scope="module")
def bare(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A stack of its own: the spans at the limits are no span of ours, and the shared stack's
    telemetry-table test reads every chat-client span it holds."""
    run_dir = tmp_path_factory.mktemp("telemetry-limits")
    with running_stack(run_dir, secrets.token_urlsafe(32), viewers=False) as stack:
        yield stack


def test_spans_of_absurd_sizes_are_refused(bare: Stack) -> None:
    stack = bare
    jaeger = JaegerClient(stack.info.jaeger_query_url)
    before = refused_spans(stack)
    client = Service.CHAT_CLIENT
    absurd = [
        Forged(client, "x" * 257),
        Forged(client, "many attributes", attributes={f"a{n}": "v" for n in range(129)}),
        Forged(client, "many events", events=129),
        Forged(client, "many links", links=129),
    ]
    # Just inside every limit: kept.
    control = Forged(client, "y" * 256, attributes={f"a{n}": "v" for n in range(100)}, events=3)
    assert _post(_public(stack), _traces_request([*absurd, control])).status_code == 200
    _stored(jaeger, control)
    for span in absurd:
        assert jaeger.get_trace(span.trace_hex) == [], span.name[:20]
    assert _settled(stack, before, len(absurd)) == len(absurd)
    # A body over the bound is refused whole, before any span is read.
    huge = _traces_request([Forged(client, "huge", attributes={"blob": "x" * (1 << 20)})])
    assert _post(_public(stack), huge).status_code == 400


def test_only_the_chat_page_may_post_from_a_browser(stack: Stack) -> None:
    """CORS: the public path answers the chat page's origin only; the internal path no
    browser at all (it has no CORS)."""
    for origin, allowed in (("http://evil.example", False), (stack.info.frontend_url, True)):
        headers = {"Origin": origin, "Access-Control-Request-Method": "POST"}
        answer = httpx.options(_public(stack), headers=headers)
        assert (answer.headers.get("access-control-allow-origin") == origin) is allowed
        answer = httpx.options(_internal(stack), headers=headers)
        assert "access-control-allow-origin" not in answer.headers
        assert answer.status_code == 401


# -- (d) the internal path -------------------------------------------------------------------------


async def test_the_services_export_through_the_internal_path(
    omni_chat: ChatFactory, omni_traces: TraceFetcher
) -> None:
    async with omni_chat("alice") as chat:
        reply = await chat.send("Through the internal path")
    assert reply.ok, reply.frame
    message, session = omni_traces.message(reply)
    assert_message_chain(message, session)
    # The server layers did not come through the public path; the client's did.
    for span in message.spans:
        assert (span.attributes.get(PATH) == "public") is (span.service == Service.CHAT_CLIENT)


def test_the_internal_path_refuses_a_missing_or_wrong_credential(
    stack: Stack, omni_jaeger: JaegerClient
) -> None:
    wrong = "Basic " + base64.b64encode(b"omni-trace:guess").decode()
    refused = {
        "no credential": (Forged(Service.OMNI2, SpanName.TURN), {}),
        "wrong password": (Forged(Service.OMNI2, SpanName.TURN), {"Authorization": wrong}),
        "a bearer token": (
            Forged(Service.OMNI2, SpanName.TURN),
            {"Authorization": "Bearer " + secrets.token_urlsafe(16)},
        ),
    }
    for what, (span, headers) in refused.items():
        answer = _post(_internal(stack), _traces_request([span]), **headers)
        assert answer.status_code == 401, (what, answer.status_code, answer.text)
    # The credential the services hold is taken (the control: what was refused above would
    # have been stored by now).
    control = Forged(Service.OMNI2, SpanName.TURN)
    answer = _post(
        _internal(stack), _traces_request([control]), Authorization=stack.otlp_authorization
    )
    assert answer.status_code == 200, answer.text
    (kept,) = _stored(omni_jaeger, control)
    assert PATH not in kept.attributes
    for what, (span, _) in refused.items():
        assert omni_jaeger.get_trace(span.trace_hex) == [], what


def _curl_speaks_h2c() -> bool:
    curl = shutil.which("curl")
    if curl is None:
        return False
    version = subprocess.run([curl, "-V"], capture_output=True, text=True, check=False)
    return "HTTP2" in version.stdout


@pytest.mark.skipif(not _curl_speaks_h2c(), reason="needs curl with HTTP/2 (gRPC without TLS)")
def test_the_internal_grpc_port_asks_for_the_credential_too(stack: Stack) -> None:
    """OTLP/gRPC (the port no service of ours uses, open to any that would): an Export
    without the credential is UNAUTHENTICATED (grpc-status 16), with it OK (0)."""
    url = (
        f"http://{stack.settings.host}:{stack.ports.otlp_grpc}"
        "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
    )
    body = _traces_request([Forged(Service.OMNI2, SpanName.TURN)])
    frame = b"\x00" + len(body).to_bytes(4, "big") + body  # gRPC's length-prefixed message

    def status(*headers: str) -> str:
        argv = ["curl", "-s", "--http2-prior-knowledge", "-D", "-", "-o", "/dev/null"]
        argv += ["-H", "content-type: application/grpc", "-H", "te: trailers"]
        for header in headers:
            argv += ["-H", header]
        run = subprocess.run(
            [*argv, "--data-binary", "@-", url], input=frame, capture_output=True, timeout=10
        )
        found = re.search(rb"grpc-status: (\d+)", run.stdout)
        assert found, run.stdout
        return found[1].decode()

    assert status() == "16"
    assert status("authorization: Basic " + base64.b64encode(b"omni-trace:x").decode()) == "16"
    # (Given as a header on curl's command line here: this test's own process, not a service.)
    assert status(f"authorization: {stack.otlp_authorization}") == "0"


def test_the_credential_is_in_no_argv_log_or_stack_file(stack: Stack) -> None:
    password = stack.otlp_password
    token = stack.otlp_authorization.split(" ", 1)[1]
    stack_file = stack.run_dir / "stack-file-check.json"
    stack.info.write(stack_file)
    assert password not in stack_file.read_text() and token not in stack_file.read_text()
    for pid in stack.pids().values():
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            argv = cmdline.read().decode(errors="replace")
        assert password not in argv and token not in argv
    logs = "".join(p.read_text(errors="replace") for p in stack.logs_dir.glob("*.log"))
    assert password not in logs and token not in logs
    # Traefik's copy of its config holds the header: private to this user.
    rendered = stack.config_dir / "traefik.yml"
    assert token in rendered.read_text() and rendered.stat().st_mode & 0o777 == 0o600
    # Jaeger's environment holds only a hash of it.
    with open(f"/proc/{stack.pids()['jaeger']}/environ", "rb") as environ:
        assert password.encode() not in environ.read()


# -- the legacy path ----------------------------------------------------------------------------

LEGACY_CLIENT = textwrap.dedent(
    """
    import json, sys, time
    from jaeger_client import Config

    host, _, port = sys.argv[1].rpartition(":")
    ids = {}
    for service in sys.argv[2:]:
        config = Config(
            config={
                "sampler": {"type": "const", "param": 1},
                "local_agent": {"reporting_host": host, "reporting_port": int(port)},
                "generate_128bit_trace_id": True,
                "reporter_flush_interval": 0.1,
                "logging": False,
            },
            service_name=service,
            validate=True,
        )
        tracer = config.new_tracer()
        with tracer.start_span("chat.turn") as span:
            ids[service] = format(span.trace_id, "032x")
        time.sleep(0.5)  # its reporter's flush
        tracer.close()
    time.sleep(0.5)
    print(json.dumps(ids))
    """
)


def test_the_legacy_receiver_takes_only_the_legacy_services(
    stack: Stack, omni_jaeger: JaegerClient
) -> None:
    before = refused_spans(stack, "filter/legacy")
    run = subprocess.run(
        [sys.executable, "-c", LEGACY_CLIENT, stack.info.jaeger_thrift_compact,
         Service.OMNI2, "usage-ledger"],
        capture_output=True, text=True, timeout=60, env=os.environ,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    ids = json.loads(run.stdout.strip().splitlines()[-1])
    omni_jaeger.wait_for_trace(ids["usage-ledger"], bool, what="the ledger's span")
    assert omni_jaeger.get_trace(ids[Service.OMNI2]) == []
    until(
        "the legacy refusal counted",
        lambda: refused_spans(stack, "filter/legacy") >= before + 1,
        timeout_s=10,
    )
