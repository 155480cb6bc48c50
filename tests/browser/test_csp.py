"""The pages' Content-Security-Policy in Chromium: the chat page, its test page and the flow
view work with no violation at all, and neither can be framed by another site."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from omni_trace.stack import Stack
from omni_trace.traces import JaegerClient, TraceFetcher, has_services
from otel.names import Service
from tests.browser.pages import ChatPage

pytestmark = pytest.mark.browser

# Every violation the page sees, whatever reports it (the console says it too).
WATCH = """
window.__violations = [];
document.addEventListener("securitypolicyviolation", (e) =>
  window.__violations.push(`${e.violatedDirective} ${e.blockedURI}`));
"""


def _violations(page: Page) -> list[str]:
    return list(page.evaluate("window.__violations || []"))


def test_the_pages_work_under_their_policy(page: Page, stack: Stack, jaeger: JaegerClient) -> None:
    console: list[str] = []
    page.on("console", lambda m: console.append(m.text))
    page.add_init_script(WATCH)

    # The chat page: login (the dashboard), the WebSocket, the browser's spans (public OTLP).
    chat = ChatPage(page, stack.info).open()
    chat.log_in("alice", "alice-demo")
    token = chat.token()
    chat.open_chat().wait_connected()
    reply = chat.send("Hello under a strict policy")
    assert reply.text.startswith("You said:")
    assert _violations(page) == []
    TraceFetcher(jaeger).wait(
        reply.trace_id, has_services(Service.CHAT_BROWSER), what="the browser's own span"
    )
    conversation = chat.conversation_id()
    chat.log_out()

    # The WebSocket test page.
    page.goto(f"{stack.info.frontend_url}/test_ws_chat.html")
    page.fill("#token", token)
    page.click("#connect")
    expect(page.locator("#status")).to_have_attribute("data-state", "connected")
    page.click("#disconnect")
    assert _violations(page) == []

    # The flow view: a conversation and its waterfall (bars placed by style attributes).
    page.goto(f"{stack.info.flowview_url}/#/conversation/{conversation}")
    page.locator(f'tr[data-trace="{reply.trace_id}"] a').click()
    expect(page.locator(".waterfall .span .bar").first).to_be_visible()
    width = page.locator(".waterfall .span .bar").first.evaluate(
        "b => b.getBoundingClientRect().width"
    )
    assert width > 10, "the bar's width comes from its style attribute"
    assert _violations(page) == []
    assert not [line for line in console if "Content Security Policy" in line], console


@pytest.mark.parametrize("which", ["chat page", "flow view"])
def test_another_site_cannot_frame_the_pages(page: Page, stack: Stack, which: str) -> None:
    url = stack.info.frontend_url if which == "chat page" else stack.info.flowview_url
    # A page of another origin (about:blank here) puts the page in a frame, for clickjacking;
    # Chromium refuses to show it and says why in the framing page's console.
    with page.expect_console_message(lambda m: "frame-ancestors 'none'" in m.text):
        page.set_content(f'<iframe id="victim" src="{url}/" width="600" height="400"></iframe>')
    framed = page.frame_locator("#victim")
    expect(framed.locator("#login, #view")).to_have_count(0)
