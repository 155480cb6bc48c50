"""The chat page in real Chromium: log in, two streamed replies, each traced from the browser."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import Page, expect

from omni_trace.stack import Stack
from omni_trace.traces import JaegerClient, TraceFetcher
from otel.names import Service
from tests.browser.conftest import Screenshots
from tests.browser.pages import ChatPage
from tests.browser.traces import (
    MESSAGE_SPANS,
    SESSION_SPANS,
    check_message_trace,
    check_session_trace,
)

pytestmark = pytest.mark.browser


def test_two_messages_traced_from_the_browser(
    page: Page, stack: Stack, jaeger: JaegerClient, screenshots: Screenshots
) -> None:
    chat = ChatPage(page, stack.info).open()
    screenshots.take(page, "login")
    chat.log_in("alice", "alice-demo")
    token = chat.token()
    assert token.count(".") == 2, "the login's JWT is kept in localStorage 'token'"
    screenshots.take(page, "logged-in")

    chat.open_chat().wait_connected()
    conversation = chat.conversation_id()
    session_id = chat.session_trace_id()
    assert conversation and len(session_id) == 32

    first = chat.send("What can you do?")
    second = chat.send("And how does my message travel?")
    screenshots.take(page, "two-replies")
    for reply in (first, second):
        assert reply.text.startswith("You said:"), reply
        assert reply.token_frames > 1, "the reply was streamed token by token"
        assert len(reply.trace_id) == 32
        assert reply.link == f"{stack.info.flowview_url}/#/trace/{reply.trace_id}", (
            "each reply links to its trace in the flow view"
        )
    assert first.trace_id != second.trace_id != session_id
    expect(page.locator("#chat-session a.trace-link")).to_have_attribute(
        "data-trace-id", session_id
    )

    # Closing the connection ends Traefik's entry span, completing the session trace.
    chat.log_out()
    traces = TraceFetcher(jaeger)
    session = traces.wait(session_id, SESSION_SPANS, what="every layer's connect")
    check_session_trace(session, "alice", conversation)
    for reply in (first, second):
        message = traces.wait(
            reply.trace_id, MESSAGE_SPANS, what="browser, dashboard and omni2 spans"
        )
        check_message_trace(message, session, conversation)
        # The page's spans came through the public OTLP path (port 4319), the servers' not.
        for span in [*message, *session]:
            stamped = span.attributes.get("chat.telemetry.path") == "public"
            assert stamped is (span.service == Service.CHAT_BROWSER), (span.service, span.name)

    # The JWT rode in the WebSocket URL: it must not reach any exported span of the page.
    # Jaeger's raw JSON of each trace, every field of it (the toolkit reads only parsed spans).
    for trace_id in (session_id, first.trace_id, second.trace_id):
        raw = httpx.get(f"{jaeger.query_url}/api/v3/traces/{trace_id}", timeout=5).text
        assert token not in raw, f"JWT exported in trace {trace_id}"
    assert Service.CHAT_BROWSER in jaeger.services()
    assert urlsplit(stack.info.otlp_http_endpoint).port == stack.ports.otlp_public_http
    for log in Path(stack.info.logs_dir).glob("*.log"):
        assert token not in log.read_text(errors="replace"), f"JWT written to {log.name}"
