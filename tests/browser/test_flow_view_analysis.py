"""The flow view in Debian's Chromium: a message's critical path highlighted in its waterfall,
and two messages compared from a message's page."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import pytest
from playwright.sync_api import Page, expect

from omni_trace.stack import Stack
from omni_trace.stack.client import login, open_chat
from omni_trace.traces import JaegerClient, wait_for_chain
from omni_trace.traces.critical_path import critical_path
from otel.names import Service
from tests.browser.conftest import Screenshots
from tests.whole_stack.conftest import client_provider

pytestmark = pytest.mark.browser


def _two_messages(stack: Stack) -> tuple[str, str]:
    """A tool-free and a tool-calling message of alice: their trace ids."""

    async def run() -> tuple[str, str]:
        with client_provider(stack) as provider:
            token = await login(stack.info.dashboard_url, "alice", "alice-demo")
            async with open_chat(
                stack.info.dashboard_ws_url, token, tracer_provider=provider
            ) as chat:
                plain = await chat.send("Hello, which path is critical?")
                tool = await chat.send("How many products per category are in the database?")
            provider.force_flush(5000)
        assert plain.ok and tool.ok, (plain.frame, tool.frame)
        return plain.trace_id, tool.trace_id

    # Playwright's sync API runs an event loop in this thread: chat from another.
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, run()).result()


def test_the_critical_path_is_highlighted_and_two_messages_compare(
    page: Page, stack: Stack, jaeger: JaegerClient, screenshots: Screenshots
) -> None:
    plain, tool = _two_messages(stack)
    for trace_id in (plain, tool):
        assert wait_for_chain(jaeger, trace_id).whole
    path = critical_path(jaeger.get_trace(tool))

    page.goto(f"{stack.info.flowview_url}/#/trace/{tool}")
    waterfall = page.locator(".waterfall").first
    highlighted = waterfall.locator('.span[data-critical="true"]')
    expect(highlighted).to_have_count(len(path.span_ids))
    ids = highlighted.evaluate_all("rows => rows.map(r => r.dataset.span)")
    assert sorted(ids) == sorted(path.span_ids)
    # The session trace below is not the message's time: nothing highlighted there.
    expect(page.locator(".waterfall").nth(1).locator("[data-critical]")).to_have_count(0)
    steps = page.locator("#critical-path li")
    expect(steps).to_have_count(len(path.segments))
    expect(steps.first).to_contain_text(Service.CHAT_CLIENT)
    screenshots.take(page, "critical-path")

    # Compare it with the tool-free message: the tool's spans and the MCP layer only in A.
    page.fill("#compare input", plain)
    page.click("#compare button")
    expect(page).to_have_url(f"{stack.info.flowview_url}/#/diff/{tool}/{plain}")
    expect(page.locator("#diff")).to_have_attribute("data-same", "false")
    expect(page.locator("#only-in-a")).to_contain_text("execute_tool database_query")
    expect(page.locator("#diff")).to_contain_text(f"layers: {Service.MCP_TOOLS}")
    expect(page.locator('#diff-hops tr[data-what="model"]')).to_be_visible()
    expect(page.locator('#diff-spans tr[data-what="omni2 chat.turn"]')).to_be_visible()
    screenshots.take(page, "diff")
