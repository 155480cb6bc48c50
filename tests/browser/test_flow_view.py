"""The flow view in Debian's Chromium: a conversation's chains and a message's waterfall."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from playwright.sync_api import Page, expect

from omni_trace.audit import AuditQuery, run_audit
from omni_trace.chain import wait_for_chain
from omni_trace.client import login, open_chat
from omni_trace.jaeger import JaegerClient, has_services
from omni_trace.stack import Stack
from otel.names import Service
from otel.setup import create_tracer_provider
from tests.browser.conftest import Screenshots
from tests.stack.conftest import running_stack

pytestmark = pytest.mark.browser


def _chat(stack: Stack) -> tuple[str, list[str], str]:
    """Two messages of alice (the second calls a tool): conversation, trace ids, token."""
    provider = create_tracer_provider(
        Service.CHAT_CLIENT, otlp_endpoint=stack.info.otlp_http_endpoint
    )

    async def run() -> tuple[str, list[str], str]:
        token = await login(stack.info.dashboard_url, "alice", "alice-demo")
        async with open_chat(stack.info.dashboard_ws_url, token, tracer_provider=provider) as chat:
            replies = [
                await chat.send("Hello flow view"),
                await chat.send("How many products per category are in the database?"),
            ]
        assert all(r.ok for r in replies), [r.frame for r in replies]
        assert chat.conversation_id
        return chat.conversation_id, [r.trace_id for r in replies], token

    try:
        # Playwright's sync API runs an event loop in this thread: chat from another.
        with ThreadPoolExecutor(1) as pool:
            return pool.submit(asyncio.run, run()).result()
    finally:
        provider.shutdown()


def test_a_conversation_and_its_waterfall(
    page: Page, stack: Stack, jaeger: JaegerClient, screenshots: Screenshots
) -> None:
    conversation, trace_ids, token = _chat(stack)
    for trace_id in trace_ids:
        assert not wait_for_chain(jaeger, trace_id).broken
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))

    # The list: the conversation, newest first, with its two messages and no broken chain.
    page.goto(f"{stack.info.flowview_url}/#/?user=alice")
    row = page.locator(f'tr[data-conversation="{conversation}"]')
    expect(row).to_be_visible()
    expect(row.locator("td").nth(3)).to_have_text("2")
    expect(row.locator("td").nth(4)).to_have_text("0")
    screenshots.take(page, "conversations")
    # The filters: a user and a window, kept in the address.
    page.goto(f"{stack.info.flowview_url}/#/")
    page.fill("#filters input[name=user]", "alice")
    page.select_option("#filters select[name=since]", "900")
    page.click("#filters button")
    expect(page).to_have_url(f"{stack.info.flowview_url}/#/?since=900&page=0&user=alice")
    expect(row).to_be_visible()
    expect(page.locator(".hint").first).to_contain_text("in the last 15 minutes")

    # The conversation: each message's chain and the audit's own hop numbers.
    row.locator("a").first.click()
    messages = page.locator("tr[data-trace]")
    expect(messages).to_have_count(2)
    audit = {
        r.trace_id: r
        for r in run_audit(jaeger, AuditQuery(conversation_id=conversation), settle_s=0)
    }
    for trace_id in trace_ids:
        message = page.locator(f'tr[data-trace="{trace_id}"]')
        expect(message.locator(".chain")).to_have_text("whole")
        total = audit[trace_id].hops["total"]
        assert total is not None
        expect(message.locator('[data-hop="total"]')).to_have_text(f"{total:.1f}")
    screenshots.take(page, "conversation")

    # The message with the tool call: a bar per span, as long as the span lasted.
    page.locator(f'tr[data-trace="{trace_ids[1]}"] a').click()
    bars = page.locator(".waterfall").first.locator(".span")
    spans = jaeger.get_trace(trace_ids[1])
    expect(bars).to_have_count(len(spans))
    durations = [float(d) for d in bars.evaluate_all("rows => rows.map(r => r.dataset.durationMs)")]
    widths = bars.locator(".bar").evaluate_all(
        "bars => bars.map(b => b.getBoundingClientRect().width)"
    )
    track = bars.locator(".track").first.evaluate("t => t.getBoundingClientRect().width")
    longest = max(durations)
    for duration, width in zip(durations, widths, strict=True):
        assert abs(width - track * duration / longest) <= 2, (duration, width, track)
    # Its session trace (connect, Traefik, auth) is drawn below it.
    expect(page.locator(".waterfall")).to_have_count(2)
    expect(page.locator(".waterfall").nth(1)).to_contain_text("traefik")
    page.locator(".waterfall .span").first.click()
    expect(page.locator(".details")).to_contain_text("gen_ai.conversation.id")
    screenshots.take(page, "waterfall")

    # A pasted trace id opens its view.
    page.fill("#search-text", trace_ids[0])
    page.click("#search button")
    expect(page).to_have_url(f"{stack.info.flowview_url}/#/trace/{trace_ids[0]}")

    # The hop chart: after traffic that moves the span-metric counters between scrapes, each
    # layer's line has points.
    time.sleep(6)
    _chat(stack)
    page.goto(f"{stack.info.flowview_url}/#/")
    for series in ("chat-client chat.message p50", "omni2 chat.turn p95"):
        line = page.locator(f'#hop-chart polyline[data-series="{series}"]')
        expect(line).to_have_count(1, timeout=45_000)
        assert int(line.get_attribute("data-points") or 0) >= 1
    screenshots.take(page, "hop-chart")

    # Nothing secret in the page or its requests.
    assert token not in page.content()
    assert not [url for url in requests if token in url]


@pytest.fixture(scope="module")
def untraced_omni2(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A stack whose OMNI2 exports nothing: every chain through it is broken."""
    with running_stack(tmp_path_factory.mktemp("flow-broken"), secrets.token_urlsafe(32)) as s:
        s.restart_service("omni2", {"OTEL_SDK_DISABLED": "true"})
        yield s


def test_a_broken_chain_names_the_missing_layer(
    page: Page, untraced_omni2: Stack, screenshots: Screenshots
) -> None:
    stack = untraced_omni2
    conversation, (trace_id, _), _ = _chat(stack)
    with JaegerClient(stack.info.jaeger_query_url) as jaeger:
        jaeger.wait_for_trace(
            trace_id, has_services(Service.CHAT_CLIENT, Service.DASHBOARD), what="client, relay"
        )
    page.goto(f"{stack.info.flowview_url}/#/conversation/{conversation}")
    chain = page.locator(f'tr[data-trace="{trace_id}"] .chain')
    expect(chain).to_have_attribute("data-chain", "broken")
    expect(chain).to_contain_text("missing layer omni2")
    screenshots.take(page, "broken")
    page.goto(f"{stack.info.flowview_url}/#/?user=alice")
    expect(page.locator(f'tr[data-conversation="{conversation}"] td').nth(4)).to_have_text("2")
