"""The flow view in Debian's Chromium: a conversation's chains and a message's waterfall."""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import sys
import time
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from playwright.sync_api import Locator, Page, expect

from omni_trace.stack import Stack
from omni_trace.stack.client import ChatReply, login, open_chat
from omni_trace.stack.ports import Ports
from omni_trace.traces import (
    AuditQuery,
    ChainReport,
    JaegerClient,
    Trace,
    TraceFetcher,
    assert_message_chain,
    has_services,
    has_spans_named,
    run_audit,
)
from omni_trace.traces.chain import HOPS
from otel.names import Attr, Metric, Service, SpanName
from otel.setup import create_tracer_provider
from services.common.tokens import issue_token
from services.omni2 import checks
from tests.browser.conftest import Screenshots
from tests.db import Admin
from tests.fake_openai import KEY, MODEL, FakeOpenAI
from tests.whole_stack.conftest import new_user, running_stack, serving

pytestmark = pytest.mark.browser

T = TypeVar("T")


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
    traces = TraceFetcher(jaeger)
    for trace_id in trace_ids:
        assert_message_chain(*traces.message(trace_id))
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
    spans = traces.trace(trace_ids[1])
    expect(bars).to_have_count(len(spans))
    durations = [float(d) for d in bars.evaluate_all("rows => rows.map(r => r.dataset.durationMs)")]
    widths = bars.locator(".bar").evaluate_all(
        "bars => bars.map(b => b.getBoundingClientRect().width)"
    )
    track = bars.locator(".track").first.evaluate("t => t.getBoundingClientRect().width")
    # The track is the trace's whole window, which can outlast its root span: the dashboard
    # may end its relay span just after the client has ended its message span.
    window_ms = (max(s.end_ns for s in spans) - min(s.start_ns for s in spans)) / 1e6
    for duration, width in zip(durations, widths, strict=True):
        assert abs(width - track * duration / window_ms) <= 2, (duration, width, track)
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
    # Beside it, the GenAI series by their standard names: OMNI2's time to first token.
    first_token = f"{Metric.SERVER_TIME_TO_FIRST_TOKEN} {Service.OMNI2} "
    genai = page.locator(f'#genai-chart polyline[data-series^="{first_token}"]')
    expect(genai.first).to_have_attribute("data-points", re.compile(r"^[1-9]"), timeout=45_000)
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
    conversation, trace_ids, _ = _chat(stack)
    trace_id = trace_ids[0]
    # Both messages, as the user's page below counts both (the dashboard's spans, which carry
    # the user, come in its next export).
    with JaegerClient(stack.info.jaeger_query_url) as jaeger:
        for each in trace_ids:
            TraceFetcher(jaeger).wait(
                each, has_services(Service.CHAT_CLIENT, Service.DASHBOARD), what="client, relay"
            )
    page.goto(f"{stack.info.flowview_url}/#/conversation/{conversation}")
    chain = page.locator(f'tr[data-trace="{trace_id}"] .chain')
    expect(chain).to_have_attribute("data-chain", "broken")
    expect(chain).to_contain_text("missing layer omni2")
    screenshots.take(page, "broken")
    page.goto(f"{stack.info.flowview_url}/#/?user=alice")
    expect(page.locator(f'tr[data-conversation="{conversation}"] td').nth(4)).to_have_text("2")


# -- how each message ended, what it used, and a page of 200 -------------------------------


@pytest.fixture(scope="module")
def openai_omni2(
    tmp_path_factory: pytest.TempPathFactory, fake_openai: FakeOpenAI
) -> Iterator[Stack]:
    """OMNI2 on its OpenAI provider, talking to recorded exchanges: a model that can fail
    (the offline model never does) beside one that calls MCP tools and answers."""
    env = fake_openai.omni2_env()
    with running_stack(
        tmp_path_factory.mktemp("flow-outcomes"),
        secrets.token_urlsafe(32),
        service_env={"omni2": env},
    ) as s:
        yield s


def _in_thread(coroutine: Coroutine[Any, Any, T]) -> T:
    # Playwright's sync API runs an event loop in this thread: chat from another.
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def _send_all(stack: Stack, token: str, texts: list[str]) -> tuple[str, list[ChatReply]]:
    """One connection, the messages one after another: its conversation and the replies."""
    provider = create_tracer_provider(
        Service.CHAT_CLIENT, otlp_endpoint=stack.info.otlp_http_endpoint
    )

    async def run() -> tuple[str, list[ChatReply]]:
        async with open_chat(stack.info.dashboard_ws_url, token, tracer_provider=provider) as chat:
            replies = [await chat.send(text) for text in texts]
        assert chat.conversation_id
        return chat.conversation_id, replies

    try:
        return _in_thread(run())
    finally:
        provider.shutdown()


def _watch_requests(page: Page) -> list[str]:
    """Every request of the page as text: URL, headers and body, to search for a secret."""
    seen: list[str] = []
    page.on("request", lambda r: seen.append(f"{r.url}\n{r.headers}\n{r.post_data or ''}"))
    return seen


def _no_secret_in_page(page: Page, requests: list[str], *secrets_: str) -> None:
    storage = page.evaluate(
        "() => JSON.stringify([Object.entries(localStorage), Object.entries(sessionStorage)])"
    )
    assert requests, "the page made requests"
    for secret in secrets_:
        assert secret not in page.content(), "a secret in the page's DOM"
        assert not [r for r in requests if secret in r], "a secret in the page's requests"
        assert secret not in storage, "a secret in the page's storage"


def _money(amount: float | None) -> str:
    return "-" if amount is None else checks.money(amount)


def _expected_usage(spans: Trace) -> dict[str, Any]:
    """What the page must say of a message, read straight from its spans in Jaeger."""
    models = spans.select(f"*:{SpanName.model_call(MODEL)}")
    tools = spans.select("*:execute_tool *")
    turn = spans.one(f"{Service.OMNI2}:{SpanName.TURN}")
    inputs = [m.attributes[Attr.GEN_AI_INPUT_TOKENS] for m in models if m.status != "ERROR"]
    outputs = [m.attributes[Attr.GEN_AI_OUTPUT_TOKENS] for m in models if m.status != "ERROR"]
    return {
        "models": [
            (
                m.attributes.get(Attr.GEN_AI_RESPONSE_MODEL)
                or m.attributes[Attr.GEN_AI_REQUEST_MODEL],
                m.status != "ERROR",
            )
            for m in models
        ],
        "model_rows": [
            (
                m.attributes.get(Attr.GEN_AI_RESPONSE_MODEL)
                or m.attributes[Attr.GEN_AI_REQUEST_MODEL],
                m.attributes[Attr.GEN_AI_PROVIDER],
                str(m.attributes.get(Attr.GEN_AI_INPUT_TOKENS, "-")),
                str(m.attributes.get(Attr.GEN_AI_OUTPUT_TOKENS, "-")),
                f"{m.duration_ms:.1f}",
                "ok" if m.status != "ERROR" else f"failed ({m.attributes[Attr.ERROR_TYPE]})",
            )
            for m in models
        ],
        "tokens": f"{sum(inputs)} in / {sum(outputs)} out" if inputs else "-",
        "cost": _money(turn.attributes.get(Attr.USAGE_COST)),
        "tools": [
            f"{t.attributes[Attr.GEN_AI_TOOL_NAME]} {t.duration_ms:.1f} ms "
            + ("ok" if t.attributes.get(Attr.TOOL_STATUS) == "ok" else "failed")
            for t in tools
        ],
        "tool_rows": [
            (
                t.attributes[Attr.GEN_AI_TOOL_NAME],
                t.attributes[Attr.GEN_AI_TOOL_CALL_ID],
                f"{t.duration_ms:.1f}",
            )
            for t in tools
        ],
    }


def _cells(locator: Locator) -> list[str]:
    return [t.strip() for t in locator.all_inner_texts()]


def _hops_match_the_audit(scope: Locator, report: ChainReport) -> None:
    """Every hop the page shows is the audit's number (`omni-trace audit --json`)."""
    assert set(report.hops) == set(HOPS)
    for hop in HOPS:
        value = report.hops[hop]
        expect(scope.locator(f'[data-hop="{hop}"]')).to_have_text(
            "-" if value is None else f"{value:.1f}"
        )


def test_refused_failed_and_tool_messages_with_their_usage(
    page: Page, openai_omni2: Stack, fake_openai: FakeOpenAI, screenshots: Screenshots
) -> None:
    stack = openai_omni2
    # A rate limit of 3 a minute: the fourth message in a row is refused by OMNI2's check.
    user = new_user(Admin(stack.info.omni2_database_url), rate_per_minute=3)
    token = issue_token(user, stack.jwt_secret)
    fake_openai.queue += ["openai_tool_calls", "openai_answer", "openai_answer", "openai_bad_key"]
    conversation, replies = _send_all(
        stack,
        token,
        [
            "How many products are there?",  # the model calls database_query over MCP
            "Thanks, that is all I needed",  # a plain answer
            "One more question",  # the provider refuses OMNI2's key: a model error
            "And another one",  # over the rate limit: refused before the model
        ],
    )
    tool, plain, failed, refused = replies
    assert tool.ok and tool.frame["result"]["tools_used"] == ["database_query"], tool.frame
    assert plain.ok and plain.frame["result"]["tools_used"] == [], plain.frame
    assert failed.frame["code"] == "provider_auth", failed.frame
    assert refused.frame["code"] == "rate_limited", refused.frame
    assert fake_openai.queue == [], "the refused message reached no model"

    with JaegerClient(stack.info.jaeger_query_url) as jaeger:
        traces = TraceFetcher(jaeger)
        for reply in replies:
            assert_message_chain(*traces.message(reply))
        traces.wait(
            tool.trace_id,
            has_spans_named((Service.MCP_TOOLS, SpanName.mcp("tools/call", "database_query"))),
            what="the MCP server's span of the tool call",
        )
        spans = {r.trace_id: traces.trace(r.trace_id) for r in replies}
        audit = {
            r.trace_id: r
            for r in run_audit(jaeger, AuditQuery(conversation_id=conversation), settle_s=0)
        }
    assert list(audit) == [r.trace_id for r in replies]
    usage = {trace_id: _expected_usage(found) for trace_id, found in spans.items()}
    # The spans say what the frames said: the page is checked against the spans below.
    assert usage[tool.trace_id]["tokens"] == (
        f"{tool.frame['result']['tokens_input']} in / {tool.frame['result']['tokens_output']} out"
    )
    assert usage[tool.trace_id]["cost"] == checks.money(tool.frame["result"]["cost"])
    requests = _watch_requests(page)

    page.goto(f"{stack.info.flowview_url}/#/conversation/{conversation}")
    rows = page.locator("tr[data-trace]")
    expect(rows).to_have_count(4)
    assert rows.evaluate_all("rows => rows.map(r => r.dataset.trace)") == list(audit)
    expect(page.locator("#conversation-summary")).to_have_text(
        f"user {user} · 4 messages · 0 broken · 1 with errors · 1 refused"
    )
    outcomes = {
        tool.trace_id: ("ok", "ok"),
        plain.trace_id: ("ok", "ok"),
        failed.trace_id: ("error", "error (provider_auth): model failed: openai returned HTTP 401"),
        refused.trace_id: (
            "refused",
            "refused (rate_limited): Rate limit exceeded: 3 messages per minute",
        ),
    }
    for trace_id, (state, text) in outcomes.items():
        row = page.locator(f'tr[data-trace="{trace_id}"]')
        expect(row.locator(".chain")).to_have_text("whole")
        outcome = row.locator(".outcome")
        expect(outcome).to_have_attribute("data-outcome", state)
        if state == "ok":
            expect(outcome).to_have_text("ok")
        else:
            expect(outcome).to_contain_text(text)
        expected = usage[trace_id]
        chips = row.locator('[data-col="model"] .chip')
        shown = chips.evaluate_all("cs => cs.map(c => [c.dataset.model, c.dataset.ok])")
        calls = expected["models"]
        assert shown == [
            [model, str(all(ok for m, ok in calls if m == model)).lower()]
            for model in dict.fromkeys(m for m, _ in calls)
        ], (trace_id, shown, calls)
        expect(row.locator('[data-col="tokens"]')).to_have_text(expected["tokens"])
        expect(row.locator('[data-col="cost"]')).to_have_text(expected["cost"])
        assert _cells(row.locator('[data-col="tools"] .chip')) == expected["tools"]
        _hops_match_the_audit(row, audit[trace_id])
    # Readable at a glance: the tool call, the two model calls of that message, the failure.
    tool_row = page.locator(f'tr[data-trace="{tool.trace_id}"]')
    expect(tool_row.locator('[data-col="tools"]')).to_contain_text("database_query")
    expect(tool_row.locator('[data-col="model"]')).to_have_text("gpt-4o-mini-2024-07-18 \u00d72")
    failed_row = page.locator(f'tr[data-trace="{failed.trace_id}"]')
    expect(failed_row.locator('[data-col="model"]')).to_have_text(
        "gpt-4o-mini failed (provider_auth)"
    )
    expect(page.locator(f'tr[data-trace="{refused.trace_id}"] [data-col="model"]')).to_have_text(
        "-"
    )
    screenshots.take(page, "outcomes")

    # Each message's own page: the same verdict, its model and tool calls, the audit's hops.
    for reply, name in ((tool, "tool-call"), (failed, "model-error"), (refused, "refused")):
        page.goto(f"{stack.info.flowview_url}/#/trace/{reply.trace_id}")
        summary = page.locator("#turn")
        expected = usage[reply.trace_id]
        state, text = outcomes[reply.trace_id]
        expect(summary).to_have_attribute("data-outcome", state)
        expect(summary.locator(".outcome")).to_contain_text(text)
        expect(summary.locator(".chain")).to_have_text("whole")
        expect(summary.locator('[data-col="tokens"]')).to_have_text(expected["tokens"])
        expect(summary.locator('[data-col="cost"]')).to_have_text(expected["cost"])
        models = summary.locator("tr[data-model-call]")
        expect(models).to_have_count(len(expected["model_rows"]))
        shown = [tuple(_cells(r.locator("td"))) for r in models.all()]
        assert shown == expected["model_rows"], shown
        tools = summary.locator("tr[data-tool-call]")
        expect(tools).to_have_count(len(expected["tool_rows"]))
        for row, (tool_name, call_id, duration) in zip(
            tools.all(), expected["tool_rows"], strict=True
        ):
            assert _cells(row.locator("td")) == [tool_name, call_id, duration, "ok"]
        _hops_match_the_audit(summary, audit[reply.trace_id])
        # The model's and the tools' spans stand out in the waterfall.
        waterfall = page.locator(".waterfall").first
        expect(waterfall.locator('.span[data-op="chat"]')).to_have_count(len(expected["models"]))
        expect(waterfall.locator('.span[data-op="execute_tool"]')).to_have_count(
            len(expected["tools"])
        )
        screenshots.take(page, name)

    _no_secret_in_page(page, requests, token, KEY)


def test_a_conversation_of_200_messages_renders_and_says_how_fast(
    page: Page, stack: Stack, screenshots: Screenshots
) -> None:
    # Limits of its own: 200 messages in a minute is past every role's rate and daily tokens.
    user = new_user(
        Admin(stack.info.omni2_database_url),
        "admin",
        rate_per_minute=1000,
        daily_tokens=100_000_000,
        daily_cost=1_000_000.0,
    )
    token = issue_token(user, stack.jwt_secret)
    started = time.monotonic()
    conversation, replies = _send_all(stack, token, [f"Message {i}" for i in range(200)])
    print(f"200 messages sent and answered in {time.monotonic() - started:.1f} s")
    assert all(r.ok for r in replies), [r.frame for r in replies if not r.ok][:3]
    with JaegerClient(stack.info.jaeger_query_url) as jaeger:
        assert_message_chain(*TraceFetcher(jaeger).message(replies[-1]))
        query = AuditQuery(conversation_id=conversation)
        deadline = time.monotonic() + 30
        reports = run_audit(jaeger, query, settle_s=0)
        while len(reports) < 200 and time.monotonic() < deadline:
            time.sleep(0.5)
            reports = run_audit(jaeger, query, settle_s=0)
    assert [r.trace_id for r in reports] == [r.trace_id for r in replies]

    api_started = time.perf_counter()
    answer = httpx.get(f"{stack.info.flowview_url}/api/conversations/{conversation}", timeout=60)
    api_ms = (time.perf_counter() - api_started) * 1000
    assert answer.status_code == 200 and len(answer.json()["messages"]) == 200
    print(f"flow view API: conversation of 200 messages in {api_ms:.0f} ms")

    requests = _watch_requests(page)
    page.goto(f"{stack.info.flowview_url}/#/conversation/{conversation}")
    expect(page.locator("tr[data-trace]")).to_have_count(200, timeout=60_000)
    view = page.locator('#view[data-view="conversation"]')
    expect(view).to_have_attribute("data-render-ms", re.compile(r"^\d+(\.\d+)?$"))
    timing = view.evaluate(
        """v => ({
            api: Number(v.dataset.apiMs),
            render: Number(v.dataset.renderMs),
            total: Number(v.dataset.totalMs),
            sinceNavigation: (() => {
                const m = performance.getEntriesByName("flow:conversation").at(-1);
                return m ? m.startTime + m.duration : null;
            })(),
        })"""
    )
    print(
        "flow view page, 200 messages (performance.now() in Chromium): "
        f"API answer {timing['api']:.0f} ms, rows built and laid out {timing['render']:.0f} ms, "
        f"together {timing['total']:.0f} ms; {timing['sinceNavigation']:.0f} ms after navigation"
    )
    assert timing["render"] >= 0 and timing["total"] >= timing["render"]
    assert timing["sinceNavigation"] is not None
    expect(page.locator("tr[data-trace] .chain")).to_have_text(["whole"] * 200)
    screenshots.take(page, "200-messages")
    _no_secret_in_page(page, requests, token)


JAEGER_UI = "http://jaeger-ui.example:16686"


@pytest.fixture
def flowview_with_jaeger_ui(stack: Stack, tmp_path: Path) -> Iterator[str]:
    """A second flow view over the stack's Jaeger, told of a Jaeger UI as compose's is."""
    port = Ports.free().flowview
    env = {
        **os.environ,
        "FLOWVIEW_HOST": "127.0.0.1",
        "FLOWVIEW_PORT": str(port),
        "FLOWVIEW_JAEGER_QUERY_URL": stack.info.jaeger_query_url,
        "FLOWVIEW_JAEGER_UI_URL": JAEGER_UI,
    }
    log = tmp_path / "flowview.log"
    argv = [sys.executable, "-m", "omni_trace.flowview"]
    with serving(argv, env, f"http://127.0.0.1:{port}", log) as url:
        yield url


def test_a_trace_links_back_to_the_jaeger_ui(
    page: Page, stack: Stack, jaeger: JaegerClient, flowview_with_jaeger_ui: str
) -> None:
    _, (trace_id, _), _ = _chat(stack)
    assert_message_chain(*TraceFetcher(jaeger).message(trace_id))
    page.goto(f"{flowview_with_jaeger_ui}/#/trace/{trace_id}")
    expect(page.locator("#jaeger-ui")).to_have_attribute("href", f"{JAEGER_UI}/trace/{trace_id}")
    # Without a Jaeger UI configured (the local stack's), no such link.
    page.goto(f"{stack.info.flowview_url}/#/trace/{trace_id}")
    expect(page.locator(".waterfall").first).to_be_visible()
    expect(page.locator("#jaeger-ui")).to_have_count(0)
