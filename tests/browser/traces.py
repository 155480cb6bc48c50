"""Trace shapes the browser layer must produce, checked against what Jaeger holds."""

from __future__ import annotations

import httpx

from omni_trace.traces.jaeger import JaegerClient, TraceSpan
from otel.names import Attr, LinkRole, Service, SpanName
from tests.stack.traces import chain_names, expect, link_targets, one

SESSION_SERVICES = (Service.CHAT_BROWSER, Service.DASHBOARD, Service.TRAEFIK, Service.AUTH)


def message_chain_complete(spans: list[TraceSpan]) -> bool:
    names = {(s.service, s.name) for s in spans}
    return {
        (Service.CHAT_BROWSER, SpanName.MESSAGE),
        (Service.DASHBOARD, SpanName.RELAY),
        (Service.OMNI2, SpanName.TURN),
    } <= names


def session_complete(spans: list[TraceSpan]) -> bool:
    names = {(s.service, s.name) for s in spans}
    return (
        set(SESSION_SERVICES) <= {s.service for s in spans}
        and (Service.OMNI2, SpanName.CONNECT) in names
        and (Service.TRAEFIK, "GET") in names  # Traefik's entry span: only after the close
    )


def check_session_trace(session: list[TraceSpan], user: str, conversation: str) -> None:
    """chat-browser chat.connect > dashboard chat.connect > upstream connect > Traefik > omni2."""
    browser = one(session, Service.CHAT_BROWSER, SpanName.CONNECT)
    dashboard = one(session, Service.DASHBOARD, SpanName.CONNECT)
    omni2 = one(session, Service.OMNI2, SpanName.CONNECT)
    verify = one(session, Service.AUTH, SpanName.AUTH_VERIFY)
    expect(browser.parent_span_id is None, "chat-browser chat.connect is the root", session)
    expect(browser.kind == "CLIENT", "the browser's connect span is a CLIENT span", session)
    expect(
        dashboard.parent_span_id == browser.span_id,
        "the dashboard continues the browser's query-string traceparent",
        session,
    )
    chain = chain_names(session, omni2)
    expect(
        chain[:2] == [(Service.TRAEFIK, "ReverseProxy"), (Service.TRAEFIK, "Service")]
        and (Service.TRAEFIK, "GET") in chain
        and chain[-3:]
        == [
            (Service.DASHBOARD, SpanName.UPSTREAM_CONNECT),
            (Service.DASHBOARD, SpanName.CONNECT),
            (Service.CHAT_BROWSER, SpanName.CONNECT),
        ],
        "omni2 chat.connect hangs below Traefik, the dashboard and the browser",
        session,
    )
    expect(
        chain_names(session, verify)[:2]
        == [(Service.TRAEFIK, "AuthRequest"), (Service.TRAEFIK, "ForwardAuth")],
        "the auth service answered Traefik's ForwardAuth",
        session,
    )
    expect(
        browser.attributes.get(Attr.CONVERSATION_ID) == conversation
        and browser.attributes.get(Attr.USER_ID) == user,
        "the browser's connect span names the conversation and user of the welcome frame",
        session,
    )
    url = str(browser.attributes.get(Attr.URL_FULL, ""))
    expect("token=REDACTED" in url, f"url.full is redacted: {url}", session)


def check_message_trace(
    spans: list[TraceSpan], session: list[TraceSpan], conversation: str
) -> None:
    """chat-browser chat.message (root) > dashboard chat.relay > omni2 chat.turn, linked."""
    message = one(spans, Service.CHAT_BROWSER, SpanName.MESSAGE)
    relay = one(spans, Service.DASHBOARD, SpanName.RELAY)
    turn = one(spans, Service.OMNI2, SpanName.TURN)
    expect(message.parent_span_id is None, "chat-browser chat.message is the root", spans)
    expect(relay.parent_span_id == message.span_id, "chat.relay < browser chat.message", spans)
    expect(turn.parent_span_id == relay.span_id, "chat.turn < chat.relay", spans)
    expect(
        all(s.attributes.get(Attr.CONVERSATION_ID) == conversation for s in spans),
        f"every span of the message carries {Attr.CONVERSATION_ID}={conversation}",
        spans,
    )
    expect("first_token" in message.event_names, "the browser recorded the first token", spans)
    expect(
        message.attributes.get(Attr.FRAME_TYPE) == "done"
        and int(message.attributes.get(Attr.TOKEN_FRAMES, 0)) > 1,
        "the browser span ended on done after a streamed reply",
        spans,
    )
    # The hop through Traefik is in the session trace, reached through span links.
    upstream = one(session, Service.DASHBOARD, SpanName.UPSTREAM_CONNECT)
    reverse_proxy = one(session, Service.TRAEFIK, "ReverseProxy")
    session_id = upstream.trace_id
    expect(
        link_targets(relay) == [(session_id, upstream.span_id, LinkRole.UPSTREAM_CONNECT)],
        "chat.relay links to the session's upstream connect span",
        spans,
        session,
    )
    expect(
        link_targets(turn) == [(session_id, reverse_proxy.span_id, LinkRole.GATEWAY)],
        "chat.turn links to the Traefik ReverseProxy span of the session",
        spans,
        session,
    )


def raw_trace(jaeger: JaegerClient, trace_id: str) -> str:
    """Jaeger's raw JSON of a trace, to search for secrets."""
    return httpx.get(f"{jaeger.query_url}/api/v3/traces/{trace_id}", timeout=5).text
