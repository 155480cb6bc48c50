"""The flow view's JSON API on the real stack's Jaeger: the same verdicts as `omni-trace audit`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import httpx
import pytest
from starlette.testclient import TestClient

from omni_trace.flowview.api import create_app
from omni_trace.flowview.hops import NO_PROMETHEUS
from omni_trace.stack import Stack
from omni_trace.stack.plugin import ChatFactory
from omni_trace.traces import AuditQuery, JaegerClient, run_audit, wait_for_chain
from otel.names import Metric, Service, SpanName
from services.common.tokens import issue_token
from tests.db import Admin
from tests.whole_stack.conftest import new_user

pytestmark = pytest.mark.stack


# The flow view answers only to the names it is reached by (loopback here).
LOCAL = "http://127.0.0.1"


@pytest.fixture(scope="module")
def api(stack: Stack) -> Iterator[TestClient]:
    with TestClient(create_app(stack.info.jaeger_query_url), base_url=LOCAL) as client:
        yield client


async def _conversation(
    omni_chat: ChatFactory, jaeger: JaegerClient, user: str, secret: str
) -> tuple[str, list[str]]:
    """Two messages of a fresh user (one with a tool call), their chains whole in Jaeger."""
    async with omni_chat(token=issue_token(user, secret)) as chat:
        replies = [
            await chat.send("Hello there"),
            await chat.send("How many products per category are in the database?"),
        ]
    assert all(r.ok for r in replies), [r.frame for r in replies]
    for reply in replies:
        report = wait_for_chain(jaeger, reply.trace_id)
        assert not report.broken, report.problems
    assert chat.conversation_id
    return chat.conversation_id, [r.trace_id for r in replies]


async def test_a_conversation_reads_as_the_audit_does(
    omni_chat: ChatFactory,
    omni_jaeger: JaegerClient,
    admin: Admin,
    jwt_secret: str,
    api: TestClient,
) -> None:
    user = new_user(admin)
    conversation, trace_ids = await _conversation(omni_chat, omni_jaeger, user, jwt_secret)

    listed = api.get("/api/conversations", params={"user": user}).json()
    assert [c["conversation_id"] for c in listed["conversations"]] == [conversation]
    (summary,) = listed["conversations"]
    assert (summary["user_id"], summary["messages"], summary["broken"]) == (user, 2, 0)

    detail = api.get(f"/api/conversations/{conversation}").json()
    audit = run_audit(omni_jaeger, AuditQuery(conversation_id=conversation), settle_s=0)
    assert [m["trace_id"] for m in detail["messages"]] == trace_ids
    # The same analysis, so the same verdicts and hop numbers as `omni-trace audit --json`.
    assert detail["messages"] == [r.as_dict() for r in audit]
    assert all(all(m["layers"].values()) for m in detail["messages"])
    assert len(detail["session_trace_ids"]) == 1
    # Beside the audit's verdicts, how each message ended and what it used, from its spans.
    hello, tool = (detail["turns"][t] for t in trace_ids)
    assert (hello["outcome"], tool["outcome"], detail["refused"]) == ("ok", "ok", 0)
    assert [(c["name"], c["ok"]) for c in tool["tool_calls"]] == [("database_query", True)]
    assert [c["model"] for c in tool["model_calls"]] == ["omni2-offline-1"] * 2
    assert hello["tool_calls"] == [] and hello["cost_usd"] > 0 and hello["output_tokens"] > 0

    message = api.get(f"/api/traces/{trace_ids[1]}").json()
    assert message["kind"] == "message"
    names = {(s["service"], s["name"]) for s in message["spans"]}
    assert {
        (Service.CHAT_CLIENT, SpanName.MESSAGE),
        (Service.DASHBOARD, SpanName.RELAY),
        (Service.OMNI2, SpanName.TURN),
        (Service.MCP_TOOLS, "tools/call database_query"),
    } <= names
    # Its own page has the same chain report and summary as the conversation's.
    assert message["chain"] == detail["messages"][1]
    assert message["turn"] == tool
    # The message trace leads to its connection's session trace through its links.
    assert message["linked_trace_ids"] == detail["session_trace_ids"]
    session = api.get(f"/api/traces/{detail['session_trace_ids'][0]}").json()
    assert session["kind"] == "session"
    assert Service.TRAEFIK in {s["service"] for s in session["spans"]}

    # A pasted id opens the right view, whichever kind it is.
    assert api.get("/api/search", params={"q": trace_ids[0].upper()}).json() == {
        "view": "trace",
        "trace_id": trace_ids[0],
        "kind": "message",
    }
    assert (
        api.get("/api/search", params={"q": detail["session_trace_ids"][0]}).json()["kind"]
        == "session"
    )
    assert api.get("/api/search", params={"q": conversation}).json() == {
        "view": "conversation",
        "conversation_id": conversation,
    }
    assert api.get("/api/search", params={"q": user}).json() == {
        "view": "conversations",
        "user_id": user,
    }


@pytest.mark.parametrize(
    ("path", "params", "status", "error"),
    [
        ("/api/traces/not-a-trace", {}, 400, "a trace id is 32 hexadecimal characters"),
        ("/api/traces/" + "0" * 31 + "1", {}, 404, "is not in Jaeger"),
        ("/api/conversations/%3Cscript%3E", {}, 400, "conversation id: letters, digits"),
        ("/api/conversations/no-such-conversation", {}, 404, "no messages of conversation"),
        ("/api/conversations", {"since": "soon"}, 400, "since: a number"),
        ("/api/conversations", {"since": "1e9"}, 400, "since: between 1 s and"),
        ("/api/conversations", {"page_size": "100000"}, 400, "page size: 1..200"),
        ("/api/conversations", {"page": "inf"}, 400, "page: a finite number"),
        ("/api/hops", {"minutes": "nan"}, 400, "minutes: a finite number"),
        ("/api/conversations", {"user": "x" * 500}, 400, "user: letters, digits"),
        ("/api/search", {"q": ""}, 400, "search: letters, digits"),
        ("/api/search", {"q": "nobody-at-all"}, 404, "no trace, conversation or user"),
    ],
)
def test_bad_queries_get_a_clear_answer(
    api: TestClient, path: str, params: dict[str, str], status: int, error: str
) -> None:
    response = api.get(path, params=params)
    assert response.status_code == status
    assert error in response.json()["error"]


def test_a_dead_jaeger_is_named() -> None:
    with TestClient(create_app("http://127.0.0.1:9"), base_url=LOCAL) as api:
        response = api.get("/api/conversations")
    assert response.status_code == 503
    assert "Jaeger query API at http://127.0.0.1:9 unreachable" in response.json()["error"]


def test_the_stack_serves_the_flow_view(stack: Stack) -> None:
    assert stack.info.flowview_url
    health = httpx.get(f"{stack.info.flowview_url}/healthz", timeout=5)
    listed = httpx.get(f"{stack.info.flowview_url}/api/conversations", timeout=30)
    assert health.status_code == 200
    assert listed.status_code == 200 and "conversations" in listed.json()


@pytest.mark.slow  # waits on exports or timing: not in --quick
async def test_hops_over_time_come_from_span_metrics_in_prometheus(
    stack: Stack,
    omni_chat: ChatFactory,
    omni_jaeger: JaegerClient,
    admin: Admin,
    jwt_secret: str,
) -> None:
    assert stack.info.prometheus_url, "Prometheus is installed by scripts/bootstrap"
    # Two rounds of traffic a few scrapes apart: a rate needs the counters to move.
    for _ in range(2):
        await _conversation(omni_chat, omni_jaeger, new_user(admin), jwt_secret)
        await asyncio.sleep(6)
    deadline = time.monotonic() + 45
    while True:
        hops = httpx.get(f"{stack.info.flowview_url}/api/hops", params={"minutes": 5}, timeout=10)
        assert hops.status_code == 200, hops.text
        data = hops.json()
        lines = {(s["service"], s["span"], s["quantile"]): s["points"] for s in data["latency_ms"]}
        if (Service.OMNI2, SpanName.TURN, 0.95) in lines or time.monotonic() > deadline:
            break
        await asyncio.sleep(2)
    assert data["available"] is True
    for service, span in (
        (Service.CHAT_CLIENT, SpanName.MESSAGE),
        (Service.DASHBOARD, SpanName.RELAY),
        (Service.OMNI2, SpanName.TURN),
    ):
        p50, p95 = lines[(service, span, 0.5)], lines[(service, span, 0.95)]
        assert p50 and p95, (service, span)
        assert all(value > 0 for _, value in p50 + p95)
        assert p50[-1][1] <= p95[-1][1]
    errors = {e["service"]: e["points"] for e in data["error_ratio"]}
    assert all(0 <= value <= 1 for _, value in errors[Service.OMNI2])


@pytest.mark.slow  # waits on exports or timing: not in --quick
async def test_hops_carry_the_genai_series_by_their_standard_names(
    stack: Stack,
    omni_chat: ChatFactory,
    omni_jaeger: JaegerClient,
    admin: Admin,
    jwt_secret: str,
) -> None:
    """OMNI2's gen_ai.server.time_to_first_token and the model's
    gen_ai.client.operation.time_per_output_chunk, p50 and p95 over time, per service and model."""
    assert stack.info.prometheus_url, "Prometheus is installed by scripts/bootstrap"
    for _ in range(2):
        await _conversation(omni_chat, omni_jaeger, new_user(admin), jwt_secret)
        await asyncio.sleep(6)
    wanted = {
        (metric, q) for metric in (Metric.SERVER_TIME_TO_FIRST_TOKEN, Metric.TIME_PER_OUTPUT_CHUNK)
        for q in (0.5, 0.95)
    }  # fmt: skip
    deadline = time.monotonic() + 45
    while True:
        hops = httpx.get(f"{stack.info.flowview_url}/api/hops", params={"minutes": 5}, timeout=10)
        assert hops.status_code == 200, hops.text
        series = [s for s in hops.json()["genai_s"] if s["service"] == Service.OMNI2]
        found = {(s["metric"], s["quantile"]) for s in series}
        if wanted <= found or time.monotonic() > deadline:
            break
        await asyncio.sleep(2)
    assert wanted <= found, found
    for s in series:
        assert s["model"], s
        assert s["points"] and all(value >= 0 for _, value in s["points"]), s


def test_without_prometheus_the_hop_chart_says_how_to_get_it(stack: Stack) -> None:
    with TestClient(create_app(stack.info.jaeger_query_url), base_url=LOCAL) as api:
        data = api.get("/api/hops").json()
        assert api.get("/api/hops", params={"minutes": "0"}).status_code == 400
    assert data == {"available": False, "hint": NO_PROMETHEUS}
