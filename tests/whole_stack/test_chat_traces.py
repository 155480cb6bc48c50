"""Two messages on one connection: one session trace across every layer, one trace per message."""

from __future__ import annotations

import pytest

from omni_trace.stack.demo import SESSION_SERVICES, message_trace_complete
from omni_trace.stack.plugin import ChatFactory
from omni_trace.traces import (
    JaegerClient,
    Trace,
    TraceFetcher,
    TraceSpan,
    has_services,
    has_spans_named,
)
from otel.names import Attr, LinkRole, Service, SpanName

pytestmark = pytest.mark.stack


def session_complete(spans: list[TraceSpan]) -> bool:
    return has_services(*SESSION_SERVICES)(spans) and has_spans_named(
        (Service.TRAEFIK, "GET")  # Traefik's entry span: only after the close
    )(spans)


def link_targets(span: TraceSpan) -> list[tuple[str, str, object]]:
    """(trace id, span id, link role) of each of a span's links."""
    return [(lk.trace_id, lk.span_id, lk.attributes.get(Attr.LINK_ROLE)) for lk in span.links]


async def test_two_messages_one_connection(
    omni_chat: ChatFactory, omni_jaeger: JaegerClient, omni_traces: TraceFetcher
) -> None:
    async with omni_chat("alice") as chat:
        first = await chat.send("What can you do?")
        second = await chat.send("And then?")
    conversation = chat.conversation_id
    assert conversation

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
    session.one(f"{Service.AUTH}:{SpanName.AUTH_VERIFY}")
    session.one(f"{Service.OMNI2}:{SpanName.CONNECT}")

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
    session.assert_attribute(f"{Service.AUTH}:{SpanName.AUTH_VERIFY}", Attr.USER_ID, "alice")
    # omni2's chat.connect carries the conversation and the verified user.
    omni2_connect_selector = f"{Service.OMNI2}:{SpanName.CONNECT}"
    session.assert_attribute(omni2_connect_selector, Attr.CONVERSATION_ID, conversation)
    session.assert_attribute(omni2_connect_selector, Attr.USER_ID, "alice")
    session.expect(
        dashboard_connect.parent_span_id == client_connect.span_id,
        "dashboard continues the client's query-string context",
    )

    for reply in (first, second):
        # The session trace is printed along with the message trace when a check fails.
        spans = Trace(
            omni_traces.wait(
                reply.trace_id, message_trace_complete, what="client, dashboard and omni2 spans"
            ),
            related=[session],
        )
        message = spans.one(f"{Service.CHAT_CLIENT}:{SpanName.MESSAGE}")
        relay = spans.one(f"{Service.DASHBOARD}:{SpanName.RELAY}")
        turn = spans.one(f"{Service.OMNI2}:{SpanName.TURN}")
        spans.one(f"{Service.OMNI2}:{SpanName.model_call('omni2-offline-1')}")
        spans.expect(message.parent_span_id is None, "chat.message is the root")
        # model call < chat.turn < chat.relay < chat.message
        spans.assert_chain(
            f"{Service.CHAT_CLIENT}:{SpanName.MESSAGE} > {Service.DASHBOARD}:{SpanName.RELAY}"
            f" > {Service.OMNI2}:{SpanName.TURN}"
            f" > {Service.OMNI2}:{SpanName.model_call('omni2-offline-1')}"
        )
        spans.assert_everywhere(Attr.CONVERSATION_ID, conversation)
        # The server-side message spans carry the verified user.
        spans.assert_attribute(f"{Service.DASHBOARD}:{SpanName.RELAY}", Attr.USER_ID, "alice")
        spans.assert_attribute(f"{Service.OMNI2}:{SpanName.TURN}", Attr.USER_ID, "alice")
        # The hop through Traefik is reached through the links into the session trace.
        spans.expect(
            link_targets(relay)
            == [(chat.session_trace_id, upstream.span_id, LinkRole.UPSTREAM_CONNECT)],
            "chat.relay links to its upstream connect span",
        )
        spans.expect(
            link_targets(turn)
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
