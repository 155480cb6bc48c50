"""What the audit may conclude about clients, through the real stack: a client that sends no
trace context (most real clients) is whole from the dashboard with the client not traced; one
that says it kept no span (`-00`) too; a client span lost on its way is a broken chain with
that cause; and a client cannot join its message to a trace another message already has."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from websockets.asyncio.client import connect

from omni_trace.cli import main
from omni_trace.stack import Stack
from omni_trace.stack.client import login, open_chat
from omni_trace.traces import AuditQuery, JaegerClient, Trace, TraceFetcher, run_audit
from omni_trace.traces.chain import NOT_TRACED, PRESENT, ChainReport
from otel.names import Attr, ClientContext, Service, SpanName

pytestmark = pytest.mark.stack


async def _plain_chat(
    stack: Stack, text: str, *, query: str = "", trace: dict[str, str] | None = None
) -> dict[str, Any]:
    """A client with no tracing of its own (wscat, an app, the seed's page): a token in the
    query string and a bare frame; returns the `done` frame."""
    token = await login(stack.info.dashboard_url, "alice", "alice-demo")
    async with connect(f"{stack.info.dashboard_ws_url}?token={token}{query}") as ws:
        welcome = json.loads(await ws.recv())
        assert welcome["type"] == "welcome"
        frame: dict[str, Any] = {"type": "message", "text": text}
        if trace is not None:
            frame["trace"] = trace
        await ws.send(json.dumps(frame))
        while (reply := json.loads(await ws.recv()))["type"] == "token":
            pass
    assert reply["type"] == "done", reply
    return {**reply, "conversation_id": welcome["conversation_id"]}


def _chain(jaeger: JaegerClient, traces: TraceFetcher, done: dict[str, Any]) -> ChainReport:
    """The audit's report of the message, once every server layer's span is in Jaeger."""
    traces.wait(
        done["trace_id"],
        lambda spans: {Service.DASHBOARD, Service.OMNI2} <= {s.service for s in spans},
        what="the dashboard's and OMNI2's spans",
    )
    reports = run_audit(
        jaeger, AuditQuery(conversation_id=done["conversation_id"], since_s=300), settle_s=3
    )
    (report,) = reports
    assert report.trace_id == done["trace_id"]
    return report


def _audit_json(stack: Stack, conversation: str, capsys: pytest.CaptureFixture[str]) -> Any:
    argv = ["audit", "--conversation", conversation, "--settle", "3s", "--json"]
    code = main([*argv, "--jaeger", stack.info.jaeger_query_url])
    return code, json.loads(capsys.readouterr().out)


@pytest.mark.slow  # waits on exports or timing: not in --quick
async def test_a_client_without_trace_context_is_whole_and_not_traced(
    stack: Stack,
    omni_jaeger: JaegerClient,
    omni_traces: TraceFetcher,
    capsys: pytest.CaptureFixture[str],
) -> None:
    done = await _plain_chat(stack, "no tracing here")
    report = _chain(omni_jaeger, omni_traces, done)
    assert not report.broken, report.problems
    assert report.layer_states == {
        "client": NOT_TRACED,
        "dashboard": PRESENT,
        "traefik": PRESENT,
        "omni2": PRESENT,
    }
    assert report.first_layer == "dashboard" and report.hops["client_to_dashboard"] is None
    trace = Trace(omni_jaeger.get_trace(done["trace_id"]))
    relay = trace.one(f"{Service.DASHBOARD}:{SpanName.RELAY}")
    assert relay.parent_span_id is None  # the dashboard started the trace
    assert relay.attributes[Attr.CLIENT_CONTEXT] == ClientContext.NONE
    assert Attr.CLIENT_SAMPLED not in relay.attributes

    code, data = _audit_json(stack, done["conversation_id"], capsys)
    assert code == 0, data
    (message,) = data["messages"]
    assert message["layer_states"]["client"] == "not traced" and not message["broken"]
    assert data["not_traced"] == 1 and data["broken"] == 0

    argv = ["audit", "--conversation", done["conversation_id"], "--settle", "3s"]
    assert main([*argv, "--jaeger", stack.info.jaeger_query_url]) == 0
    out = capsys.readouterr().out
    assert ".DTO" in out and "ok (client not traced)" in out
    assert "1 whole from the first traced layer (client not traced)" in out
    # A team whose clients are all instrumented requires them.
    assert main([*argv, "--jaeger", stack.info.jaeger_query_url, "--require", "client"]) == 1
    assert "missing layer client" in capsys.readouterr().out

    doctor = ["doctor", "--jaeger", stack.info.jaeger_query_url]
    assert main([*doctor, "--conversation", done["conversation_id"]]) == 0
    out = capsys.readouterr().out
    assert "not traced" in out and "1 whole and answered" in out


async def test_a_client_that_says_it_kept_no_span_is_traced_by_us_and_not_traced_itself(
    stack: Stack, omni_jaeger: JaegerClient, omni_traces: TraceFetcher
) -> None:
    client_trace = uuid.uuid4().hex
    done = await _plain_chat(
        stack, "minus zero zero", trace={"traceparent": f"00-{client_trace}-{'ab' * 8}-00"}
    )
    # Its flag decides nothing: the message is traced, in the trace it named.
    assert done["trace_id"] == client_trace
    report = _chain(omni_jaeger, omni_traces, done)
    assert not report.broken, report.problems
    assert report.not_traced == ["client"]
    relay = Trace(omni_jaeger.get_trace(client_trace)).one(f"{Service.DASHBOARD}:{SpanName.RELAY}")
    assert relay.attributes[Attr.CLIENT_CONTEXT] == ClientContext.CONTINUED
    assert relay.attributes[Attr.CLIENT_SAMPLED] is False


@pytest.mark.slow  # waits on exports or timing: not in --quick
async def test_a_client_span_lost_on_its_way_breaks_the_chain(
    stack: Stack,
    omni_jaeger: JaegerClient,
    omni_traces: TraceFetcher,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # A traced client whose spans never leave it: sampled context, no exporter.
    provider = TracerProvider()
    token = await login(stack.info.dashboard_url, "alice", "alice-demo")
    async with open_chat(stack.info.dashboard_ws_url, token, tracer_provider=provider) as chat:
        reply = await chat.send("my span is lost")
    assert reply.ok and chat.conversation_id
    done = {"trace_id": reply.trace_id, "conversation_id": chat.conversation_id}
    report = _chain(omni_jaeger, omni_traces, done)
    assert report.broken and report.layer_states["client"] == "missing"
    assert "missing layer client (its span was lost)" in report.problems
    assert (report.hop, report.cause) == ("client -> dashboard", "client span lost")

    doctor = ["doctor", "--jaeger", stack.info.jaeger_query_url]
    assert main([*doctor, "--trace", reply.trace_id]) == 1
    assert "chain breaks at client -> dashboard: client span lost" in capsys.readouterr().out


async def test_a_trace_id_another_message_used_is_not_joined(
    stack: Stack, omni_jaeger: JaegerClient, omni_traces: TraceFetcher
) -> None:
    victim = await _plain_chat(stack, "my own trace", trace={"traceparent": _traceparent("00")})
    omni_traces.wait(
        victim["trace_id"],
        lambda spans: any(s.service == Service.OMNI2 for s in spans),
        what="the victim's message at OMNI2",
    )
    # Another connection names the victim's trace (another span id, sampled).
    intruder = await _plain_chat(
        stack,
        "join me to it",
        trace={"traceparent": f"00-{victim['trace_id']}-{'cd' * 8}-01"},
        query=f"&traceparent=00-{victim['trace_id']}-{'ef' * 8}-01",
    )
    assert intruder["trace_id"] != victim["trace_id"]
    report = _chain(omni_jaeger, omni_traces, intruder)
    assert not report.broken and report.not_traced == ["client"], report.problems
    relay = Trace(omni_jaeger.get_trace(intruder["trace_id"])).one(
        f"{Service.DASHBOARD}:{SpanName.RELAY}"
    )
    assert relay.attributes[Attr.CLIENT_CONTEXT] == ClientContext.REUSED
    assert relay.links and all(link.trace_id != victim["trace_id"] for link in relay.links)
    # The victim's trace holds its own message only, and is as whole as before.
    victims = Trace(omni_jaeger.get_trace(victim["trace_id"]))
    victims.assert_count(f"{Service.DASHBOARD}:{SpanName.RELAY}", 1)
    victims.assert_count(f"{Service.OMNI2}:{SpanName.TURN}", 1)
    (report,) = run_audit(
        omni_jaeger, AuditQuery(conversation_id=victim["conversation_id"]), settle_s=3
    )
    assert not report.broken and report.trace_id == victim["trace_id"], report.problems


def _traceparent(flags: str) -> str:
    return f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-{flags}"
