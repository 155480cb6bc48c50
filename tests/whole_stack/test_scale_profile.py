"""The scale-out profile (`omni-trace up --scale`) as a user meets it: every part started and
named in the stack file and checked by the doctor; chats through the one dashboard address
spread over both dashboard replicas and both OMNI2 replicas, each chain whole in the audit
and in the flow view, with the front gateway linked from the session; a dead dashboard
replica or a dead collector costs no chat and no span."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider

from omni_trace.doctor.probe import diagnose
from omni_trace.stack import Stack
from omni_trace.stack.client import ChatRefused, login, open_chat
from omni_trace.traces import (
    AuditQuery,
    JaegerClient,
    Trace,
    TraceFetcher,
    TraceSpan,
    assert_message_chain,
    run_audit,
)
from otel.names import Service, SpanName
from services.common.tokens import issue_token
from tests.db import Admin
from tests.whole_stack.conftest import new_user, running_stack

pytestmark = [pytest.mark.stack, pytest.mark.slow]

SECRET = secrets.token_urlsafe(32)
TRAEFIK = "traefik"


@pytest.fixture(scope="module")
def own_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("scale"), SECRET, scale=True) as stack:
        yield stack


async def _chats(stack: Stack, provider: TracerProvider, n: int, tag: str) -> list[tuple[Any, str]]:
    """`n` connections one after another (round robin alternates), one message each: each
    reply with its conversation id."""
    token = await login(stack.info.dashboard_url, "bob", stack.info.demo_passwords["bob"])
    replies = []
    for i in range(n):
        async with open_chat(stack.info.dashboard_ws_url, token, tracer_provider=provider) as c:
            replies.append((await c.send(f"{tag} {i}"), str(c.conversation_id)))
    assert all(r.ok for r, _ in replies), [r.frame for r, _ in replies]
    return replies


def _has_span(spans: list[TraceSpan], span_id: str) -> bool:
    return any(s.span_id == span_id for s in spans)


def _instance(trace: Trace, service: str, name: str) -> str:
    return str(trace.one(f"{service}:{name}").resource.get("service.instance.id"))


def test_every_part_is_named_and_checked(own_stack: Stack) -> None:
    info = own_stack.info
    assert info.trace_pipeline == "kafka" and info.kafka_brokers
    assert len(info.omni2_replicas) == 2 and len(info.dashboard_replicas) == 2
    assert info.omni2_database_url.startswith("postgresql")
    assert info.dashboard_url not in info.dashboard_replicas  # the front entry point
    result = diagnose(info, user="alice", password=info.demo_passwords["alice"])
    checks = {c.name: c.ok for c in result.checks}
    for name in (
        "dashboard replica 1",
        "dashboard replica 2",
        "omni2 replica 2",
        "kafka broker",
        "postgresql",
        "OTLP balancer -> collectors",
        *info.jaeger_parts,
    ):
        assert checks.get(name) is True, result.render()
    assert result.healthy, result.render()


async def test_chats_spread_over_every_replica_and_each_chain_is_whole(
    own_stack: Stack, provider: TracerProvider, traces: TraceFetcher, jaeger: JaegerClient
) -> None:
    replies = await _chats(own_stack, provider, 4, "spread")
    dashboards, omni2s = set(), set()
    for reply, _ in replies:
        message, session = traces.message(reply, timeout=40)
        assert_message_chain(message, session)
        dashboards.add(_instance(message, Service.DASHBOARD, SpanName.RELAY))
        omni2s.add(_instance(message, Service.OMNI2, SpanName.TURN))
        # The session's dashboard span links to the front entry point it came through:
        # Traefik's ReverseProxy span, in the trace Traefik started for the handshake.
        connect = session.one(f"{Service.DASHBOARD}:{SpanName.CONNECT}")
        (link,) = [link for link in connect.links if link.trace_id != connect.trace_id]
        front = traces.wait(
            link.trace_id,
            lambda spans, span_id=link.span_id: _has_span(spans, span_id),
            what="the front gateway's span",
            timeout=30,
        )
        target = next(s for s in front if s.span_id == link.span_id)
        assert (target.service, target.name) == (TRAEFIK, "ReverseProxy")
        assert {s.service for s in front} == {TRAEFIK}
    assert dashboards == {"dashboard", "dashboard-2"}
    assert omni2s == {"omni2", "omni2-2"}

    # The audit and the flow view say the same of each message as of the small stack.
    for reply, conversation in replies:
        (report,) = run_audit(jaeger, AuditQuery(conversation_id=conversation), settle_s=5)
        assert report.trace_id == reply.trace_id and not report.broken, report.status
        shown = httpx.get(f"{own_stack.info.flowview_url}/api/traces/{reply.trace_id}", timeout=30)
        assert shown.status_code == 200, shown.text
        assert shown.json()["chain"] == report.as_dict()


async def test_a_dead_dashboard_replica_costs_no_chat(
    own_stack: Stack, provider: TracerProvider, traces: TraceFetcher
) -> None:
    own_stack.kill_service("dashboard-2")
    try:
        token = await login(
            own_stack.info.dashboard_url, "bob", own_stack.info.demo_passwords["bob"]
        )
        # Until Traefik's health check (every 2 s) takes it out, a connection may reach the
        # dead replica and be refused by Traefik; the next ones land on the live one.
        deadline = time.monotonic() + 20
        answered: list[Any] = []
        while len(answered) < 3:
            assert time.monotonic() < deadline, f"only {len(answered)} answered"
            try:
                async with open_chat(
                    own_stack.info.dashboard_ws_url, token, tracer_provider=provider
                ) as chat:
                    answered.append(await chat.send("a dashboard is gone"))
            except ChatRefused:
                answered.clear()  # count only connections after the last refusal
                await asyncio.sleep(0.5)
        for reply in answered:
            assert reply.ok, reply.frame
            message, session = traces.message(reply, timeout=40)
            assert_message_chain(message, session)
            assert _instance(message, Service.DASHBOARD, SpanName.RELAY) == "dashboard"
    finally:
        own_stack.start_service("dashboard-2")


async def test_a_dead_collector_costs_no_span(
    own_stack: Stack, provider: TracerProvider, traces: TraceFetcher
) -> None:
    own_stack.kill_service("jaeger-collector-1")
    try:
        # Straight away: the balancer retries a refused connection on the other collector.
        replies = await _chats(own_stack, provider, 3, "a collector is gone")
        for reply, _ in replies:
            message, session = traces.message(reply, timeout=40)
            assert_message_chain(message, session)
    finally:
        own_stack.start_service("jaeger-collector-1")


def _prometheus(stack: Stack, promql: str) -> list[dict[str, Any]]:
    answer = httpx.get(
        f"{stack.info.prometheus_url}/api/v1/query", params={"query": promql}, timeout=10
    )
    assert answer.status_code == 200, (promql, answer.text)
    return list(answer.json()["data"]["result"])


async def test_metrics_reach_prometheus_once_through_two_collectors(
    own_stack: Stack, provider: TracerProvider, traces: TraceFetcher
) -> None:
    assert own_stack.info.prometheus_url, "Prometheus is installed by scripts/bootstrap"
    user = new_user(Admin(own_stack.info.omni2_database_url))
    async with open_chat(
        own_stack.info.dashboard_ws_url, issue_token(user, SECRET), tracer_provider=provider
    ) as chat:
        replies = [await chat.send("Hello metrics"), await chat.send("And again")]
    assert all(r.ok for r in replies), [r.frame for r in replies]
    cost = sum(float(r.frame["result"]["cost"]) for r in replies)

    # Several exports of the same cumulative series (every 5 s), through two collectors: it
    # must be counted once, not once per collector that relayed it.
    deadline = time.monotonic() + 60
    while True:
        found = _prometheus(own_stack, f'sum(chat_usage_cost_total{{user_id="{user}"}})')
        spans = _prometheus(
            own_stack,
            'sum by (service_name) (traces_span_metrics_calls_total{span_name="chat.turn"})',
        )
        if found and spans and time.monotonic() > deadline - 45:  # 15 s: 3 exports
            break
        assert time.monotonic() < deadline, f"cost {found}, span metrics {spans}"
        await asyncio.sleep(2)
    assert float(found[0]["value"][1]) == pytest.approx(cost, rel=1e-6)
    assert {s["metric"]["service_name"] for s in spans} == {Service.OMNI2}
    for log in Path(own_stack.info.logs_dir).glob("*.log"):
        text = log.read_text(errors="replace")
        assert "Failed to export metrics" not in text, f"{log.name}: metrics refused"


def test_the_balancer_keeps_the_two_telemetry_paths_apart(
    own_stack: Stack, jaeger: JaegerClient
) -> None:
    """The balancer's public entry point reaches the collectors' public receivers (a span as
    omni2 refused and counted, a client's stamped), its internal one their internal receivers
    (no credential: 401); Prometheus sums what both collectors refused."""
    from tests.whole_stack.test_telemetry_paths import (
        Forged,
        _post,
        _stored,
        _traces_request,
        refused_spans,
    )

    before = refused_spans(own_stack)
    forged = Forged(Service.OMNI2, SpanName.TURN)
    control = Forged(Service.CHAT_CLIENT, SpanName.MESSAGE)
    public = f"{own_stack.info.otlp_http_endpoint}/v1/traces"
    assert _post(public, _traces_request([forged, control])).status_code == 200
    (kept,) = _stored(jaeger, control)
    assert kept.attributes["chat.telemetry.path"] == "public"
    assert jaeger.get_trace(forged.trace_hex) == []
    internal = f"{own_stack.info.otlp_internal_endpoint}/v1/traces"
    unauthorised = Forged(Service.OMNI2, SpanName.TURN)
    assert _post(internal, _traces_request([unauthorised])).status_code == 401
    assert (
        httpx.post(f"{own_stack.info.otlp_http_endpoint}/v1/metrics", content=b"").status_code
        == 404
    )
    assert refused_spans(own_stack) == before + 1
    assert len(own_stack.info.jaeger_telemetry_urls) == 2  # each collector's
    deadline = time.monotonic() + 30
    while True:
        found = _prometheus(
            own_stack, 'sum(otelcol_processor_filter_spans_filtered_total{filter="filter/public"})'
        )
        if found and float(found[0]["value"][1]) >= before + 1:
            break
        assert time.monotonic() < deadline, f"Prometheus has {found}"
        time.sleep(1)
    assert jaeger.get_trace(unauthorised.trace_hex) == []
