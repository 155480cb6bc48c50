"""Trace shapes the browser layer must produce, checked against what Jaeger holds."""

from __future__ import annotations

import httpx

from omni_trace.traces import Trace
from omni_trace.traces.jaeger import JaegerClient, TraceSpan
from otel.names import Attr, LinkRole, Service, SpanName

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


def check_session_trace(session: Trace, user: str, conversation: str) -> None:
    """chat-browser chat.connect > dashboard chat.connect > upstream connect > Traefik > omni2."""
    browser = session.one(f"{Service.CHAT_BROWSER}:{SpanName.CONNECT}")
    dashboard = session.one(f"{Service.DASHBOARD}:{SpanName.CONNECT}")
    session.assert_count(f"{Service.OMNI2}:{SpanName.CONNECT}", 1)
    session.assert_count(f"{Service.AUTH}:{SpanName.AUTH_VERIFY}", 1)
    session.expect(browser.parent_span_id is None, "chat-browser chat.connect is the root")
    session.expect(browser.kind == "CLIENT", "the browser's connect span is a CLIENT span")
    session.expect(
        dashboard.parent_span_id == browser.span_id,
        "the dashboard continues the browser's query-string traceparent",
    )
    # omni2's connect hangs below Traefik, the dashboard and the browser; the auth service
    # answered Traefik's ForwardAuth.
    session.assert_chain(
        f"{Service.CHAT_BROWSER}:{SpanName.CONNECT} > {Service.DASHBOARD}:{SpanName.CONNECT}"
        f" > {Service.DASHBOARD}:{SpanName.UPSTREAM_CONNECT} >> {Service.TRAEFIK}:GET"
        f" >> {Service.TRAEFIK}:Service > {Service.TRAEFIK}:ReverseProxy"
        f" > {Service.OMNI2}:{SpanName.CONNECT}"
    )
    session.assert_chain(
        f"{Service.TRAEFIK}:ForwardAuth > {Service.TRAEFIK}:AuthRequest"
        f" > {Service.AUTH}:{SpanName.AUTH_VERIFY}"
    )
    session.expect(
        browser.attributes.get(Attr.CONVERSATION_ID) == conversation
        and browser.attributes.get(Attr.USER_ID) == user,
        "the browser's connect span names the conversation and user of the welcome frame",
    )
    url = str(browser.attributes.get(Attr.URL_FULL, ""))
    session.expect("token=REDACTED" in url, f"url.full is redacted: {url}")


def check_message_trace(spans: Trace, session: Trace, conversation: str) -> None:
    """chat-browser chat.message (root) > dashboard chat.relay > omni2 chat.turn, linked."""
    message = spans.one(f"{Service.CHAT_BROWSER}:{SpanName.MESSAGE}")
    relay = spans.one(f"{Service.DASHBOARD}:{SpanName.RELAY}")
    turn = spans.one(f"{Service.OMNI2}:{SpanName.TURN}")
    spans.expect(message.parent_span_id is None, "chat-browser chat.message is the root")
    spans.expect(relay.parent_span_id == message.span_id, "chat.relay < browser chat.message")
    spans.expect(turn.parent_span_id == relay.span_id, "chat.turn < chat.relay")
    spans.expect(
        all(s.attributes.get(Attr.CONVERSATION_ID) == conversation for s in spans),
        f"every span of the message carries {Attr.CONVERSATION_ID}={conversation}",
    )
    spans.expect("first_token" in message.event_names, "the browser recorded the first token")
    spans.expect(
        message.attributes.get(Attr.FRAME_TYPE) == "done"
        and int(message.attributes.get(Attr.TOKEN_FRAMES, 0)) > 1,
        "the browser span ended on done after a streamed reply",
    )
    # The hop through Traefik is in the session trace, reached through span links.
    upstream = session.one(f"{Service.DASHBOARD}:{SpanName.UPSTREAM_CONNECT}")
    reverse_proxy = session.one(f"{Service.TRAEFIK}:ReverseProxy")
    session_id = upstream.trace_id
    Trace(spans, related=[session]).expect(
        [(lk.trace_id, lk.span_id, lk.attributes.get(Attr.LINK_ROLE)) for lk in relay.links]
        == [(session_id, upstream.span_id, LinkRole.UPSTREAM_CONNECT)],
        "chat.relay links to the session's upstream connect span",
    )
    Trace(spans, related=[session]).expect(
        [(lk.trace_id, lk.span_id, lk.attributes.get(Attr.LINK_ROLE)) for lk in turn.links]
        == [(session_id, reverse_proxy.span_id, LinkRole.GATEWAY)],
        "chat.turn links to the Traefik ReverseProxy span of the session",
    )


def raw_trace(jaeger: JaegerClient, trace_id: str) -> str:
    """Jaeger's raw JSON of a trace, to search for secrets."""
    return httpx.get(f"{jaeger.query_url}/api/v3/traces/{trace_id}", timeout=5).text
