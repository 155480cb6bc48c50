"""Every entrance decides what is traced the same way: we do, never the client's flags.

A client that reaches Traefik (its public entry point) or OMNI2 without the dashboard, with
`-00` in its header, its query string and every frame, is still traced end to end and
audited whole from the first layer it reached; Traefik's gateway entry point, where a
`-00` would switch Traefik's own spans off, takes only the dashboard's handshakes."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from omni_trace.cli import main
from omni_trace.stack import Stack
from omni_trace.stack.client import login
from omni_trace.traces import (
    AuditQuery,
    JaegerClient,
    Trace,
    TraceFetcher,
    has_spans_named,
    run_audit,
)
from omni_trace.traces.chain import NOT_TRACED, PRESENT
from otel.names import Attr, ClientContext, Entry, LinkRole, Service, SpanName

pytestmark = pytest.mark.stack


def _unsampled() -> str:
    return f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-00"


async def _chat_unsampled(url: str, headers: dict[str, str]) -> dict[str, Any]:
    """Connect with `-00` in the header and the query, send one message with `-00` in its
    frame: the `welcome` and the `done` frame."""
    async with connect(
        f"{url}?traceparent={_unsampled()}",
        additional_headers={**headers, "traceparent": _unsampled()},
    ) as ws:
        welcome = json.loads(await ws.recv())
        assert welcome["type"] == "welcome", welcome
        message = {"type": "message", "text": "hello", "trace": {"traceparent": _unsampled()}}
        await ws.send(json.dumps(message))
        while (done := json.loads(await ws.recv()))["type"] == "token":
            pass
    assert done["type"] == "done", done
    return {"welcome": welcome, "done": done}


async def _token(stack: Stack) -> str:
    return await login(stack.info.dashboard_url, "alice", "alice-demo")


async def test_traefik_s_public_entry_point_traces_a_client_that_says_minus_zero_zero(
    stack: Stack,
    omni_jaeger: JaegerClient,
    omni_traces: TraceFetcher,
    capsys: pytest.CaptureFixture[str],
) -> None:
    token = await _token(stack)
    chat = await _chat_unsampled(
        stack.info.traefik_public_ws_url, {"Authorization": f"Bearer {token}"}
    )
    trace_id, conversation = chat["done"]["trace_id"], chat["welcome"]["conversation_id"]
    message = omni_traces.wait(
        trace_id, has_spans_named((Service.OMNI2, SpanName.TURN)), what="OMNI2's turn"
    )
    turn = message.one(f"{Service.OMNI2}:{SpanName.TURN}")
    message.expect(turn.attributes[Attr.ENTRY] == Entry.GATEWAY, "the turn says how it came")
    message.expect(
        turn.attributes[Attr.CLIENT_CONTEXT] == ClientContext.CONTINUED
        and turn.attributes[Attr.CLIENT_SAMPLED] is False,
        "OMNI2, the first hop of the frames, records the client's context and its -00",
    )
    (gateway,) = [
        link for link in turn.links if link.attributes.get(Attr.LINK_ROLE) == LinkRole.GATEWAY
    ]
    # The connection ended: Traefik's entry span has arrived, in a trace Traefik started
    # (its public entry point took the client's context out).
    session = omni_traces.wait(
        gateway.trace_id,
        has_spans_named((Service.TRAEFIK, "GET"), (Service.OMNI2, SpanName.CONNECT)),
        what="Traefik's entry span and OMNI2's connect",
    )
    session.assert_chain(
        f"{Service.TRAEFIK}:GET > {Service.TRAEFIK}:Router >> {Service.TRAEFIK}:ReverseProxy "
        f"> {Service.OMNI2}:{SpanName.CONNECT}[{Attr.ENTRY}={Entry.GATEWAY}]"
    )
    session.assert_chain(f"{Service.TRAEFIK}:AuthRequest > {Service.AUTH}:*")
    entry = session.one(f"{Service.TRAEFIK}:GET")
    session.expect(entry.parent_span_id is None, "Traefik's trace: no client context in it")

    (report,) = run_audit(omni_jaeger, AuditQuery(conversation_id=conversation), settle_s=3)
    assert not report.broken, report.problems
    assert report.layer_states == {
        "client": NOT_TRACED,
        "dashboard": NOT_TRACED,
        "traefik": PRESENT,
        "omni2": PRESENT,
    }
    argv = ["audit", "--conversation", conversation, "--settle", "3s", "--jaeger"]
    assert main([*argv, stack.info.jaeger_query_url]) == 0
    assert "..TO" in capsys.readouterr().out


async def test_the_gateway_entry_point_takes_only_the_dashboards_handshakes(
    stack: Stack, omni_jaeger: JaegerClient
) -> None:
    token = await _token(stack)
    with pytest.raises(InvalidStatus) as refused:
        await _chat_unsampled(stack.info.traefik_ws_url, {"Authorization": f"Bearer {token}"})
    response = refused.value.response
    assert response.status_code == 403
    assert "public entry point" in json.loads(response.body or b"{}")["reason"]


async def test_straight_to_omni2_a_client_is_traced_whatever_its_flags(
    stack: Stack, omni_jaeger: JaegerClient, omni_traces: TraceFetcher
) -> None:
    token = await _token(stack)
    headers = {"Authorization": f"Bearer {token}", "x-user-id": "alice"}
    chat = await _chat_unsampled(stack.info.omni2_ws_url, headers)
    trace_id, conversation = chat["done"]["trace_id"], chat["welcome"]["conversation_id"]
    message = omni_traces.wait(
        trace_id, has_spans_named((Service.OMNI2, SpanName.TURN)), what="OMNI2's turn"
    )
    turn = message.one(f"{Service.OMNI2}:{SpanName.TURN}")
    message.expect(
        turn.attributes[Attr.ENTRY] == Entry.DIRECT and not turn.links,
        "straight to OMNI2: no gateway to link to",
    )
    connects = omni_jaeger.find_trace_ids(
        Service.OMNI2, {Attr.CONVERSATION_ID: conversation}, operation=SpanName.CONNECT
    )
    (session_id,) = connects
    connect_span = Trace(omni_jaeger.get_trace(session_id)).one(
        f"{Service.OMNI2}:{SpanName.CONNECT}"
    )
    assert connect_span.attributes[Attr.ENTRY] == Entry.DIRECT
    assert connect_span.attributes[Attr.CLIENT_CONTEXT] == ClientContext.CONTINUED
    (report,) = run_audit(omni_jaeger, AuditQuery(conversation_id=conversation), settle_s=3)
    assert not report.broken, report.problems
    assert report.not_traced == ["client", "dashboard", "traefik"]
    assert report.first_layer == "omni2"
