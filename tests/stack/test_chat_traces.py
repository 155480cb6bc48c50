"""Two messages on one connection: one session trace across every layer, one trace per message."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace import TracerProvider

from omni_trace.stack import Stack
from omni_trace.stack.client import login, open_chat
from omni_trace.stack.demo import SESSION_SERVICES, message_trace_complete
from omni_trace.traces.jaeger import JaegerClient, TraceSpan
from otel.names import Attr, LinkRole, Service, SpanName
from tests.stack.traces import chain_names, expect, link_targets, one

pytestmark = pytest.mark.stack


def session_complete(spans: list[TraceSpan]) -> bool:
    names = {(s.service, s.name) for s in spans}
    return set(SESSION_SERVICES) <= {s.service for s in spans} and (
        (Service.TRAEFIK, "GET") in names  # Traefik's entry span: only after the close
    )


async def test_two_messages_one_connection(
    stack: Stack, omni_tracer_provider: TracerProvider, jaeger: JaegerClient
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

    session = jaeger.wait_for_trace(
        chat.session_trace_id, session_complete, what="every layer of the session"
    )
    client_connect = one(session, Service.CHAT_CLIENT, SpanName.CONNECT)
    dashboard_connect = one(session, Service.DASHBOARD, SpanName.CONNECT)
    upstream = one(session, Service.DASHBOARD, SpanName.UPSTREAM_CONNECT)
    reverse_proxy = one(session, Service.TRAEFIK, "ReverseProxy")
    auth_request = one(session, Service.TRAEFIK, "AuthRequest")
    verify = one(session, Service.AUTH, SpanName.AUTH_VERIFY)
    omni2_connect = one(session, Service.OMNI2, SpanName.CONNECT)

    expect(client_connect.parent_span_id is None, "client chat.connect is the root", session)
    expect(
        chain_names(session, omni2_connect)[:2]
        == [(Service.TRAEFIK, "ReverseProxy"), (Service.TRAEFIK, "Service")]
        and chain_names(session, omni2_connect)[-3:]
        == [
            (Service.DASHBOARD, SpanName.UPSTREAM_CONNECT),
            (Service.DASHBOARD, SpanName.CONNECT),
            (Service.CHAT_CLIENT, SpanName.CONNECT),
        ]
        and (Service.TRAEFIK, "GET") in chain_names(session, omni2_connect),
        "omni2 chat.connect hangs below Traefik's ReverseProxy, the dashboard and the client",
        session,
    )
    expect(
        chain_names(session, verify)[:2]
        == [(Service.TRAEFIK, "AuthRequest"), (Service.TRAEFIK, "ForwardAuth")]
        and verify.parent_span_id == auth_request.span_id,
        "the auth service's span is a child of Traefik's ForwardAuth request",
        session,
    )
    expect(verify.attributes.get(Attr.USER_ID) == "alice", "auth span names the user", session)
    expect(
        omni2_connect.attributes.get(Attr.CONVERSATION_ID) == conversation
        and omni2_connect.attributes.get(Attr.USER_ID) == "alice",
        "omni2 chat.connect carries the conversation and the verified user",
        session,
    )
    expect(
        dashboard_connect.parent_span_id == client_connect.span_id,
        "dashboard continues the client's query-string context",
        session,
    )

    for reply in (first, second):
        spans = jaeger.wait_for_trace(
            reply.trace_id, message_trace_complete, what="client, dashboard and omni2 spans"
        )
        message = one(spans, Service.CHAT_CLIENT, SpanName.MESSAGE)
        relay = one(spans, Service.DASHBOARD, SpanName.RELAY)
        turn = one(spans, Service.OMNI2, SpanName.TURN)
        model = one(spans, Service.OMNI2, SpanName.model_call("omni2-offline-1"))
        expect(message.parent_span_id is None, "chat.message is the root", spans)
        expect(relay.parent_span_id == message.span_id, "chat.relay < chat.message", spans)
        expect(turn.parent_span_id == relay.span_id, "chat.turn < chat.relay", spans)
        expect(model.parent_span_id == turn.span_id, "model call < chat.turn", spans)
        missing = [
            (s.service, s.name)
            for s in spans
            if s.attributes.get(Attr.CONVERSATION_ID) != conversation
        ]
        expect(
            not missing,
            f"every message span carries {Attr.CONVERSATION_ID}={conversation}; not: {missing}",
            spans,
        )
        expect(
            relay.attributes.get(Attr.USER_ID) == turn.attributes.get(Attr.USER_ID) == "alice",
            "server-side message spans carry the verified user",
            spans,
        )
        # The hop through Traefik is reached through the links into the session trace.
        expect(
            link_targets(relay)
            == [(chat.session_trace_id, upstream.span_id, LinkRole.UPSTREAM_CONNECT)],
            "chat.relay links to its upstream connect span",
            spans,
            session,
        )
        expect(
            link_targets(turn)
            == [(chat.session_trace_id, reverse_proxy.span_id, LinkRole.GATEWAY)],
            "chat.turn links to the Traefik ReverseProxy span it came through",
            spans,
            session,
        )
        expect(
            "first_token" in message.event_names and "first_token" in relay.event_names,
            "first token recorded at the client and the dashboard",
            spans,
        )

    # Jaeger's tag search finds both messages by conversation id.
    found = jaeger.find_trace_ids(Service.OMNI2, {Attr.CONVERSATION_ID: conversation})
    assert {first.trace_id, second.trace_id} <= set(found)
