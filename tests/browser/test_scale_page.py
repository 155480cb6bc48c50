"""The chat page and the flow view through the scale-out profile (`omni-trace up --scale`), in
Debian's Chromium: the page knows one dashboard address (Traefik's front entry point before two
dashboards), exports its spans through the collectors' balancer into the Kafka pipeline, and
the flow view shows each message's chain whole, as for the small stack."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest
from playwright.sync_api import Page, expect

from omni_trace.stack import Stack
from omni_trace.traces import (
    AuditQuery,
    JaegerClient,
    TraceFetcher,
    assert_message_chain,
    has_spans_named,
    run_audit,
)
from otel.names import Service, SpanName
from tests.browser.conftest import Screenshots
from tests.browser.pages import ChatPage
from tests.browser.traces import MESSAGE_SPANS
from tests.whole_stack.conftest import running_stack

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def scale(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(
        tmp_path_factory.mktemp("scale-page"), secrets.token_urlsafe(32), scale=True
    ) as stack:
        yield stack


def test_a_chat_page_message_is_whole_through_the_scale_profile(
    page: Page, scale: Stack, screenshots: Screenshots
) -> None:
    chat = ChatPage(page, scale.info).open()
    chat.log_in("alice", "alice-demo")
    chat.open_chat().wait_connected()
    conversation = chat.conversation_id()
    replies = [chat.send("Hello, scaled-out stack"), chat.send("And once more")]
    screenshots.take(page, "two-replies")
    session_id = chat.session_trace_id()
    chat.log_out()  # Traefik's entry spans end with the connection

    with JaegerClient(scale.info.jaeger_query_url) as jaeger:
        traces = TraceFetcher(jaeger)
        session = traces.wait(
            session_id,
            has_spans_named(
                (Service.CHAT_BROWSER, SpanName.CONNECT),
                (Service.DASHBOARD, SpanName.CONNECT),
                (Service.OMNI2, SpanName.CONNECT),
                (Service.TRAEFIK, "GET"),
            ),
            what="the session through the Kafka pipeline",
            timeout=40,
        )
        for reply in replies:
            message = traces.wait(
                reply.trace_id, MESSAGE_SPANS, what="the browser's message", timeout=40
            )
            assert_message_chain(message, session)
            message.expect(
                message.one(f"{Service.CHAT_BROWSER}:{SpanName.MESSAGE}").parent_span_id is None,
                "the browser's chat.message is the root",
            )
        reports = run_audit(jaeger, AuditQuery(conversation_id=conversation), settle_s=5)
    assert sorted(r.trace_id for r in reports) == sorted(r.trace_id for r in replies)
    assert not any(r.broken for r in reports), [r.status for r in reports]

    for reply in replies:
        page.goto(f"{scale.info.flowview_url}/#/trace/{reply.trace_id}")
        expect(page.locator("#turn .chain")).to_have_text("whole", timeout=20_000)
    screenshots.take(page, "flow-view-message")
