"""Page objects: what a person does on the chat page and the test page, as test steps.

Every wait is a named condition with a timeout (Playwright's expect polls), never a sleep.
"""

from __future__ import annotations

from dataclasses import dataclass

from playwright.sync_api import Locator, Page, expect

from omni_trace.stack import StackInfo

CONNECT_TIMEOUT_MS = 15_000
REPLY_TIMEOUT_MS = 20_000


@dataclass(frozen=True)
class ShownReply:
    text: str
    trace_id: str
    token_frames: int
    link: str


class ChatPage:
    """The widget page at `/`."""

    def __init__(self, page: Page, info: StackInfo) -> None:
        self.page = page
        self.info = info
        self.status = page.locator("#chat-status")
        self.panel = page.locator("#chat-panel")

    def open(self) -> ChatPage:
        self.page.goto(self.info.frontend_url)
        return self

    def log_in(self, user: str, password: str) -> ChatPage:
        self.page.fill("#username", user)
        self.page.fill("#password", password)
        self.page.click("#login-submit")
        expect(self.page.locator("#chat-bubble"), "chat bubble after login").to_be_visible()
        return self

    def token(self) -> str:
        return str(self.page.evaluate("localStorage.getItem('token')") or "")

    def open_chat(self) -> ChatPage:
        self.page.click("#chat-bubble")
        # A refused connection closes the panel again at once and shows the login form.
        opened = self.page.locator("#chat-panel:not([hidden]), #login-notice:not([hidden])")
        expect(opened.first, "chat panel (or the refusal on the login form)").to_be_visible()
        return self

    def wait_connected(self, timeout_ms: int = CONNECT_TIMEOUT_MS) -> None:
        expect(self.status, "connection state 'connected'").to_have_attribute(
            "data-state", "connected", timeout=timeout_ms
        )

    def conversation_id(self) -> str:
        return self.panel.get_attribute("data-conversation-id") or ""

    def session_trace_id(self) -> str:
        return self.panel.get_attribute("data-session-trace-id") or ""

    def replies(self) -> Locator:
        return self.page.locator("#messages .msg.assistant")

    def send(self, text: str) -> ShownReply:
        """Type and send a message; wait until its reply is complete on the page."""
        before = self.replies().count()
        self.page.fill("#chat-input", text)
        self.page.click("#chat-send")
        reply = self.replies().nth(before)
        expect(reply, f"reply to {text!r} complete").to_have_attribute(
            "data-state", "done", timeout=REPLY_TIMEOUT_MS
        )
        link = reply.locator("a.trace-link")
        return ShownReply(
            text=reply.locator(".text").inner_text(),
            trace_id=reply.get_attribute("data-trace-id") or "",
            token_frames=int(reply.get_attribute("data-token-frames") or 0),
            link=link.get_attribute("href") or "",
        )

    def log_out(self) -> None:
        self.page.click("#logout")
        expect(self.page.locator("#login"), "login form after logout").to_be_visible()


class TestPage:
    """The seed's test_ws_chat.html."""

    __test__ = False  # not a pytest class

    def __init__(self, page: Page, info: StackInfo) -> None:
        self.page = page
        self.info = info
        self.status = page.locator("#status")
        self.log = page.locator("#log")

    def open(self) -> TestPage:
        self.page.goto(f"{self.info.frontend_url}/test_ws_chat.html")
        return self

    def connect(self, token: str | None = None) -> None:
        if token is not None:
            self.page.fill("#token", token)
        self.page.click("#connect")

    def send(self, text: str) -> None:
        self.page.fill("#message", text)
        self.page.click("#send")

    def log_text(self) -> str:
        return self.log.inner_text()
