"""Trace shapes the browser layer must produce, checked with the toolkit's Trace assertions."""

from __future__ import annotations

from omni_trace.traces import Trace, TraceSpan, has_spans_named
from otel.names import Attr, LinkRole, Service, SpanName

BROWSER_CONNECT = f"{Service.CHAT_BROWSER}:{SpanName.CONNECT}"
BROWSER_MESSAGE = f"{Service.CHAT_BROWSER}:{SpanName.MESSAGE}"
RELAY = f"{Service.DASHBOARD}:{SpanName.RELAY}"
TURN = f"{Service.OMNI2}:{SpanName.TURN}"

# Wait conditions (TraceFetcher.wait): the spans the checks below assert on.
MESSAGE_SPANS = has_spans_named(
    (Service.CHAT_BROWSER, SpanName.MESSAGE),
    (Service.DASHBOARD, SpanName.RELAY),
    (Service.OMNI2, SpanName.TURN),
)
SESSION_SPANS = has_spans_named(
    (Service.CHAT_BROWSER, SpanName.CONNECT),
    (Service.DASHBOARD, SpanName.CONNECT),
    (Service.AUTH, SpanName.AUTH_VERIFY),
    (Service.OMNI2, SpanName.CONNECT),
    (Service.TRAEFIK, "GET"),  # Traefik's entry span: only after the close
)


def check_session_trace(session: Trace, user: str, conversation: str) -> None:
    """chat-browser chat.connect > dashboard chat.connect > upstream connect > Traefik > omni2."""
    browser = session.one(BROWSER_CONNECT)
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
        f"{BROWSER_CONNECT} > {Service.DASHBOARD}:{SpanName.CONNECT}"
        f" > {Service.DASHBOARD}:{SpanName.UPSTREAM_CONNECT} >> {Service.TRAEFIK}:GET"
        f" >> {Service.TRAEFIK}:Service > {Service.TRAEFIK}:ReverseProxy"
        f" > {Service.OMNI2}:{SpanName.CONNECT}"
    )
    session.assert_chain(
        f"{Service.TRAEFIK}:ForwardAuth > {Service.TRAEFIK}:AuthRequest"
        f" > {Service.AUTH}:{SpanName.AUTH_VERIFY}"
    )
    # The conversation and user of the welcome frame.
    session.assert_attribute(BROWSER_CONNECT, Attr.CONVERSATION_ID, conversation)
    session.assert_attribute(BROWSER_CONNECT, Attr.USER_ID, user)
    url = str(browser.attributes.get(Attr.URL_FULL, ""))
    session.expect("token=REDACTED" in url, f"url.full is redacted: {url}")


def _links(span: TraceSpan) -> list[tuple[str, str, object]]:
    return [(lk.trace_id, lk.span_id, lk.attributes.get(Attr.LINK_ROLE)) for lk in span.links]


def check_message_trace(message: Trace, session: Trace, conversation: str) -> None:
    """chat-browser chat.message (root) > dashboard chat.relay > omni2 chat.turn, linked."""
    trace = Trace(message, related=[session])  # a failure prints the session trace too
    browser = trace.one(BROWSER_MESSAGE)
    relay = trace.one(RELAY)
    turn = trace.one(TURN)
    trace.expect(browser.parent_span_id is None, "chat-browser chat.message is the root")
    trace.assert_chain(f"{BROWSER_MESSAGE} > {RELAY} > {TURN}")
    trace.assert_everywhere(Attr.CONVERSATION_ID, conversation)
    trace.expect("first_token" in browser.event_names, "the browser recorded the first token")
    # The browser span ended on done after a streamed reply.
    trace.assert_attribute(BROWSER_MESSAGE, Attr.FRAME_TYPE, "done")
    trace.assert_attribute(BROWSER_MESSAGE, Attr.TOKEN_FRAMES, check=lambda n: int(n or 0) > 1)
    # The hop through Traefik is in the session trace, reached through span links.
    upstream = session.one(f"{Service.DASHBOARD}:{SpanName.UPSTREAM_CONNECT}")
    reverse_proxy = session.one(f"{Service.TRAEFIK}:ReverseProxy")
    session_id = upstream.trace_id
    trace.expect(
        _links(relay) == [(session_id, upstream.span_id, LinkRole.UPSTREAM_CONNECT)],
        "chat.relay links to the session's upstream connect span",
    )
    trace.expect(
        _links(turn) == [(session_id, reverse_proxy.span_id, LinkRole.GATEWAY)],
        "chat.turn links to the Traefik ReverseProxy span of the session",
    )
