"""A refused token: the page says why, does not knock again, and the refusal is traced."""

from __future__ import annotations

import uuid

import pytest
from playwright.sync_api import Page, expect

from omni_trace.stack import Stack
from omni_trace.traces import JaegerClient, TraceFetcher, has_spans_named
from otel.names import Attr, Service, SpanName
from services.common.protocol import CLOSE_MEANINGS, CloseCode
from services.common.tokens import issue_token
from tests.browser.conftest import Screenshots
from tests.browser.pages import ChatPage, TestPage

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

    spans = TraceFetcher(jaeger).wait(
        chat.session_trace_id(),
        has_spans_named(
            (Service.CHAT_BROWSER, SpanName.CONNECT),
            (Service.DASHBOARD, SpanName.CONNECT),
            (Service.AUTH, SpanName.AUTH_VERIFY),
        ),
        what="browser, dashboard and auth spans",
    )
    browser = spans.one(f"{Service.CHAT_BROWSER}:{SpanName.CONNECT}")
    dashboard = spans.one(f"{Service.DASHBOARD}:{SpanName.CONNECT}")
    spans.expect(
        browser.status == "ERROR"
        and browser.attributes.get(Attr.CLOSE_CODE) == CloseCode.UNAUTHENTICATED
        and dashboard.parent_span_id == browser.span_id,
        "the browser's connect span records the 4401 refusal, the dashboard's hangs below it",
    )
    spans.assert_count(f"{Service.OMNI2}:*", 0)  # a refused token never reaches OMNI2


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
    expect(page.locator("#token"), "the refused token is dropped").to_have_value("")
    assert chat.token() == token, "a pasted token's refusal leaves the login's token alone"
    assert BAD_TOKEN not in test_page.log_text()
    screenshots.take(page, "refused")

    test_page.connect(token)
    expect(test_page.status).to_have_attribute("data-state", "connected")
    test_page.page.click("#disconnect")


# The page retries an outage after 0.5 s, then 1 s, 2 s (services/frontend/settings.py): a page
# that would knock again after a refusal opens at least two more sockets in this time.
NO_RETRY_WINDOW_MS = 3_000


def refused_at_omni2(
    page: Page,
    stack: Stack,
    jaeger: JaegerClient,
    screenshots: Screenshots,
    *,
    code: CloseCode,
    shown: str,
    user: str,
    sockets: list[str],
) -> None:
    """The chat was opened; OMNI2 refuses it with a final code. The page ends on the login form
    with the reason, the token gone, exactly one WebSocket opened, and the refusal traced."""
    chat = ChatPage(page, stack.info)
    expect(chat.status, "the refusal ends the connection").to_have_attribute(
        "data-state", "closed", timeout=15_000
    )
    label = CLOSE_MEANINGS[code].label
    expect(chat.status).to_have_text(f"closed: {shown}")
    assert shown.startswith(label), f"{shown!r} is shown under the table's label {label!r}"
    notice = page.locator("#login-notice")
    expect(notice, "the login form says why").to_be_visible()
    expect(notice).to_have_text(f"Chat closed: {shown}. Please log in again.")
    expect(notice).to_have_attribute("data-close-code", str(int(code)))
    expect(page.locator("#login-form"), "back on the login form").to_be_visible()
    expect(chat.panel, "the chat panel is closed").to_be_hidden()
    expect(page.locator("#chat-bubble")).to_be_hidden()
    stored = page.evaluate("() => [localStorage.getItem('token'), sessionStorage.length]")
    assert stored == [None, 0], "the refused token is dropped from the browser's storage"
    screenshots.take(page, "refused")

    session_id = chat.session_trace_id()
    page.wait_for_timeout(NO_RETRY_WINDOW_MS)  # proving an absence: nothing to wait for
    assert len(sockets) == 1, f"the page knocked again after {code}: {len(sockets)} sockets"
    expect(chat.status).to_have_attribute("data-state", "closed")

    spans = TraceFetcher(jaeger).wait(
        session_id,
        has_spans_named(
            (Service.CHAT_BROWSER, SpanName.CONNECT), (Service.OMNI2, SpanName.CONNECT)
        ),
        what="the browser's and omni2's connect spans",
    )
    browser = spans.one(f"{Service.CHAT_BROWSER}:{SpanName.CONNECT}")
    omni2 = spans.one(f"{Service.OMNI2}:{SpanName.CONNECT}")
    spans.expect(
        browser.attributes.get(Attr.CLOSE_CODE) == code
        and browser.status == "ERROR"
        and omni2.attributes.get(Attr.CLOSE_CODE) == code
        and omni2.attributes.get(Attr.USER_ID) == user,
        f"omni2 refused {user} with {code}, and the browser recorded that close",
    )


def count_sockets(page: Page) -> list[str]:
    """The chat WebSockets the page opens, as the browser reports them (token masked)."""
    opened: list[str] = []
    page.on(
        "websocket",
        lambda ws: opened.append(ws.url.split("?")[0]) if "/ws/chat" in ws.url else None,
    )
    return opened


def test_blocked_user_returns_to_the_login_form(
    page: Page, stack: Stack, jaeger: JaegerClient, screenshots: Screenshots
) -> None:
    sockets = count_sockets(page)
    chat = ChatPage(page, stack.info).open().log_in("mallory", "mallory-demo")
    chat.open_chat()
    refused_at_omni2(
        page,
        stack,
        jaeger,
        screenshots,
        code=CloseCode.USER_BLOCKED,
        shown="user blocked: abusive prompts reported by the security team",
        user="mallory",
        sockets=sockets,
    )
    expect(page.locator("#username"), "the login form remembers who it was").to_have_value(
        "mallory"
    )


def test_unknown_user_returns_to_the_login_form(
    page: Page, stack: Stack, jaeger: JaegerClient, screenshots: Screenshots
) -> None:
    """A valid token for a subject OMNI2 has never heard of (minted with the stack's secret)."""
    ghost = f"ghost-{uuid.uuid4().hex[:8]}"
    sockets = count_sockets(page)
    chat = ChatPage(page, stack.info).open()
    token = issue_token(ghost, stack.jwt_secret)
    page.evaluate(
        "([token, user]) => {"
        " localStorage.setItem('token', token); localStorage.setItem('user', user); }",
        [token, ghost],
    )
    page.reload()
    chat.open_chat()
    refused_at_omni2(
        page,
        stack,
        jaeger,
        screenshots,
        code=CloseCode.USER_UNKNOWN,
        shown=f"unknown user '{ghost}'",
        user=ghost,
        sockets=sockets,
    )
    assert token not in page.content(), "the token is not on the page"
