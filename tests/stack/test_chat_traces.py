"""Two messages on one connection: one session trace across every layer, one trace per message."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace import TracerProvider

from omni_trace.stack import Stack
from omni_trace.stack.client import login, open_chat
from omni_trace.stack.demo import SESSION_SERVICES, message_trace_complete
from omni_trace.traces import Trace, TraceFetcher
from omni_trace.traces.jaeger import JaegerClient, TraceSpan
from otel.names import Attr, LinkRole, Service, SpanName

pytestmark = pytest.mark.stack


def session_complete(spans: list[TraceSpan]) -> bool:
    names = {(s.service, s.name) for s in spans}
    return set(SESSION_SERVICES) <= {s.service for s in spans} and (
        (Service.TRAEFIK, "GET") in names  # Traefik's entry span: only after the close
    )


async def test_two_messages_one_connection(
    stack: Stack,
    omni_tracer_provider: TracerProvider,
    omni_jaeger: JaegerClient,
    omni_traces: TraceFetcher,
) -> None:
    token = await login(stack.info.dashboard_url, "alice", "alice-demo")
    async with open_chat(
        stack.info.dashboard_ws_url, token, tracer_provider=omni_tracer_provider
    ) as chat:
        first = await chat.send("What can you do?")
        second = await chat.send("And then?")
    conversation = chat.conversation_id
    assert conversation
    omni_tracer_provider.force_flush()

    for reply in (first, second):
        assert reply.ok, reply.frame
        assert reply.text
        # done carries the id of the very trace the client started.
        assert reply.frame["trace_id"] == reply.trace_id == reply.frame["result"]["trace_id"]
    assert first.trace_id != second.trace_id

    session = omni_traces.wait(
        chat.session_trace_id, session_complete, what="every layer of the session"
    )
    client_connect = session.one(f"{Service.CHAT_CLIENT}:{SpanName.CONNECT}")
    dashboard_connect = session.one(f"{Service.DASHBOARD}:{SpanName.CONNECT}")
    upstream = session.one(f"{Service.DASHBOARD}:{SpanName.UPSTREAM_CONNECT}")
    reverse_proxy = session.one(f"{Service.TRAEFIK}:ReverseProxy")
    session.assert_count(f"{Service.TRAEFIK}:AuthRequest", 1)
    verify = session.one(f"{Service.AUTH}:{SpanName.AUTH_VERIFY}")
    omni2_connect = session.one(f"{Service.OMNI2}:{SpanName.CONNECT}")

    session.expect(client_connect.parent_span_id is None, "client chat.connect is the root")
    # omni2's connect hangs below Traefik's ReverseProxy, the dashboard and the client; the
    # auth service answered Traefik's ForwardAuth.
    session.assert_chain(
        f"{Service.CHAT_CLIENT}:{SpanName.CONNECT} > {Service.DASHBOARD}:{SpanName.CONNECT}"
        f" > {Service.DASHBOARD}:{SpanName.UPSTREAM_CONNECT} >> {Service.TRAEFIK}:GET"
        f" >> {Service.TRAEFIK}:Service > {Service.TRAEFIK}:ReverseProxy"
        f" > {Service.OMNI2}:{SpanName.CONNECT}"
    )
    session.assert_chain(
        f"{Service.TRAEFIK}:ForwardAuth > {Service.TRAEFIK}:AuthRequest"
        f" > {Service.AUTH}:{SpanName.AUTH_VERIFY}"
    )
    session.expect(verify.attributes.get(Attr.USER_ID) == "alice", "auth span names the user")
    session.expect(
        omni2_connect.attributes.get(Attr.CONVERSATION_ID) == conversation
        and omni2_connect.attributes.get(Attr.USER_ID) == "alice",
        "omni2 chat.connect carries the conversation and the verified user",
    )
    session.expect(
        dashboard_connect.parent_span_id == client_connect.span_id,
        "dashboard continues the client's query-string context",
    )

    for reply in (first, second):
        spans = omni_traces.wait(
            reply.trace_id, message_trace_complete, what="client, dashboard and omni2 spans"
        )
        message = spans.one(f"{Service.CHAT_CLIENT}:{SpanName.MESSAGE}")
        relay = spans.one(f"{Service.DASHBOARD}:{SpanName.RELAY}")
        turn = spans.one(f"{Service.OMNI2}:{SpanName.TURN}")
        model = spans.one(f"{Service.OMNI2}:{SpanName.model_call('omni2-offline-1')}")
        spans.expect(message.parent_span_id is None, "chat.message is the root")
        spans.expect(relay.parent_span_id == message.span_id, "chat.relay < chat.message")
        spans.expect(turn.parent_span_id == relay.span_id, "chat.turn < chat.relay")
        spans.expect(model.parent_span_id == turn.span_id, "model call < chat.turn")
        missing = [
            (s.service, s.name)
            for s in spans
            if s.attributes.get(Attr.CONVERSATION_ID) != conversation
        ]
        spans.expect(
            not missing,
            f"every message span carries {Attr.CONVERSATION_ID}={conversation}; not: {missing}",
        )
        spans.expect(
            relay.attributes.get(Attr.USER_ID) == turn.attributes.get(Attr.USER_ID) == "alice",
            "server-side message spans carry the verified user",
        )
        # The hop through Traefik is reached through the links into the session trace.
        Trace(spans, related=[session]).expect(
            [(lk.trace_id, lk.span_id, lk.attributes.get(Attr.LINK_ROLE)) for lk in relay.links]
            == [(chat.session_trace_id, upstream.span_id, LinkRole.UPSTREAM_CONNECT)],
            "chat.relay links to its upstream connect span",
        )
        Trace(spans, related=[session]).expect(
            [(lk.trace_id, lk.span_id, lk.attributes.get(Attr.LINK_ROLE)) for lk in turn.links]
            == [(chat.session_trace_id, reverse_proxy.span_id, LinkRole.GATEWAY)],
            "chat.turn links to the Traefik ReverseProxy span it came through",
        )
        spans.expect(
            "first_token" in message.event_names and "first_token" in relay.event_names,
            "first token recorded at the client and the dashboard",
        )

    # Jaeger's tag search finds both messages by conversation id.
    found = omni_jaeger.find_trace_ids(Service.OMNI2, {Attr.CONVERSATION_ID: conversation})
    assert {first.trace_id, second.trace_id} <= set(found)
