"""The dashboard backend restarts under an open chat: the page shows it reconnecting, then works."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from omni_trace.stack import Stack
from omni_trace.traces import JaegerClient, TraceFetcher
from tests.browser.conftest import Screenshots
from tests.browser.pages import ChatPage
from tests.browser.traces import BROWSER_MESSAGE, MESSAGE_SPANS, RELAY

pytestmark = pytest.mark.browser


def test_dashboard_restart_reconnects(
    page: Page, stack: Stack, jaeger: JaegerClient, screenshots: Screenshots
) -> None:
    chat = ChatPage(page, stack.info).open().log_in("alice", "alice-demo")
    chat.open_chat().wait_connected()
    before = chat.session_trace_id()
    assert chat.send("before the restart").text

    stack.stop_service("dashboard")
    try:
        expect(chat.status, "the drop shows as reconnecting").to_have_attribute(
            "data-state", "reconnecting"
        )
        expect(chat.status).to_contain_text("reconnecting in")
        expect(chat.status).to_contain_text("server unavailable")
        screenshots.take(page, "reconnecting")
    finally:
        stack.start_service("dashboard")

    chat.wait_connected(timeout_ms=30_000)
    assert chat.session_trace_id() != before, "a new connection, with its own session trace"
    screenshots.take(page, "reconnected")
    reply = chat.send("after the restart")
    assert reply.text.startswith("You said:")
    screenshots.take(page, "chatting-again")

    spans = TraceFetcher(jaeger).wait(
        reply.trace_id, MESSAGE_SPANS, what="the message chain after reconnecting"
    )
    message = spans.one(BROWSER_MESSAGE)
    relay = spans.one(RELAY)
    spans.expect(
        message.parent_span_id is None and relay.parent_span_id == message.span_id,
        "the message after the restart is still traced from the browser",
    )
