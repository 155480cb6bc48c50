"""A refused token: the page says why, does not knock again, and the refusal is traced."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from omni_trace.jaeger import JaegerClient, TraceSpan
from omni_trace.stack import Stack
from otel.names import Attr, Service, SpanName
from services.common.protocol import CloseCode
from tests.browser.conftest import Screenshots
from tests.browser.pages import ChatPage, TestPage
from tests.stack.traces import expect as expect_trace
from tests.stack.traces import one

pytestmark = pytest.mark.browser

BAD_TOKEN = "not-a-jwt-but-a-secret-looking-value"


def test_bad_token_on_the_chat_page_shows_the_reason(
    page: Page, stack: Stack, jaeger: JaegerClient, screenshots: Screenshots
) -> None:
    chat = ChatPage(page, stack.info).open()
    page.evaluate("token => localStorage.setItem('token', token)", BAD_TOKEN)
    page.reload()
    chat.open_chat()
    expect(chat.status, "refusal shown as the connection state").to_have_attribute(
        "data-state", "closed"
    )
    expect(chat.status).to_contain_text("closed: authentication failed: token invalid")
    notice = page.locator("#login-notice")
    expect(notice, "the login form explains why").to_contain_text("authentication failed")
    expect(page.locator("#login-form")).to_be_visible()
    assert chat.token() == "", "a refused token is dropped"
    screenshots.take(page, "refused")

    session_id = chat.session_trace_id()

    def refused_at_gateway(spans: list[TraceSpan]) -> bool:
        names = {(s.service, s.name) for s in spans}
        return {(Service.CHAT_BROWSER, SpanName.CONNECT), (Service.AUTH, SpanName.AUTH_VERIFY)} <= (
            names
        )

    spans = jaeger.wait_for_trace(session_id, refused_at_gateway, what="browser and auth spans")
    browser = one(spans, Service.CHAT_BROWSER, SpanName.CONNECT)
    dashboard = one(spans, Service.DASHBOARD, SpanName.CONNECT)
    expect_trace(
        browser.status == "ERROR"
        and browser.attributes.get(Attr.CLOSE_CODE) == CloseCode.UNAUTHENTICATED
        and dashboard.parent_span_id == browser.span_id,
        "the browser's connect span records the 4401 refusal, the dashboard's hangs below it",
        spans,
    )
    expect_trace(
        not [s for s in spans if s.service == Service.OMNI2],
        "a refused token never reaches OMNI2",
        spans,
    )


def test_test_page_shows_frames_and_refusals_without_the_token(
    page: Page, stack: Stack, screenshots: Screenshots
) -> None:
    chat = ChatPage(page, stack.info).open().log_in("bob", "bob-demo")
    token = chat.token()
    test_page = TestPage(page, stack.info).open()
    expect(page.locator("#token"), "token taken from localStorage").to_have_value(token)

    test_page.connect()
    expect(test_page.status).to_have_attribute("data-state", "connected")
    test_page.send("hello from the test page")
    expect(test_page.log, "raw frames in the log").to_contain_text('"type": "done"')
    expect(test_page.log).to_contain_text("done: trace ")
    log = test_page.log_text()
    # As sent and received: the page's own frames are compact JSON, the server's are not.
    for frame in ('"type": "welcome"', '"type": "token"', '"type":"message"', '"traceparent"'):
        assert frame in log, f"{frame} missing from the frame log"
    assert "token=REDACTED" in log, "the connect line shows the URL with the token masked"
    assert token not in log, "the JWT must never be shown in the frame log"
    screenshots.take(page, "frames")

    test_page.page.click("#disconnect")
    expect(test_page.status).to_have_text("closed: disconnected")

    test_page.connect(BAD_TOKEN)
    expect(test_page.status).to_contain_text("closed: authentication failed: token invalid")
    expect(test_page.log).to_contain_text(f"code {CloseCode.UNAUTHENTICATED}")
    assert BAD_TOKEN not in test_page.log_text()
    screenshots.take(page, "refused")
