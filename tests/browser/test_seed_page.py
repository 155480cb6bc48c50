"""The seed's own test page, untraced and served from its own origin, in real Chromium: it
chats through the dashboard without sending any trace context, and the audit finds each of
its messages whole from the dashboard with the client not traced, never broken."""

from __future__ import annotations

import functools
import json
import re
import secrets
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, expect

from omni_trace.cli import main
from omni_trace.stack import Stack
from omni_trace.stack.ports import free_port
from omni_trace.traces import AuditQuery, JaegerClient, TraceFetcher, run_audit
from omni_trace.traces.chain import NOT_TRACED, PRESENT
from otel.names import Attr, ClientContext, Service, SpanName
from tests.browser.conftest import Screenshots
from tests.whole_stack.conftest import running_stack

pytestmark = pytest.mark.browser

PAGE_DIR = Path(__file__).with_name("seed_page")
DONE = '"type": "done"'
# The log holds one more `done` frame than before the message was sent.
DONE_AFTER = "([done, n]) => document.getElementById('log').textContent.split(done).length > n + 1"


@pytest.fixture(scope="module")
def seed_origin() -> Iterator[str]:
    """The page on an origin of its own, as a team serves its test page."""
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(PAGE_DIR))
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def seed_stack(tmp_path_factory: pytest.TempPathFactory, seed_origin: str) -> Iterator[Stack]:
    # The dashboard allows the page's origin, as a team adds its own page's.
    origins = {"dashboard": {"DASHBOARD_ALLOWED_ORIGINS": json.dumps([seed_origin])}}
    with running_stack(
        tmp_path_factory.mktemp("seed-page"), secrets.token_urlsafe(32), service_env=origins
    ) as stack:
        yield stack


def test_the_seed_test_page_chats_untraced_and_audits_whole(
    page: Page,
    seed_stack: Stack,
    seed_origin: str,
    screenshots: Screenshots,
    capsys: pytest.CaptureFixture[str],
) -> None:
    info = seed_stack.info
    # "Copy token: localStorage.getItem('token')": the seed's steps log in on the dashboard.
    answer = httpx.post(
        f"{info.dashboard_url}/api/login", json={"username": "alice", "password": "alice-demo"}
    )
    token = answer.json()["token"]
    page.goto(f"{seed_origin}/test_ws_chat.html?ws={info.dashboard_ws_url}")
    page.fill("#token", token)
    page.click("#connect")
    log = page.locator("#log")
    expect(log).to_contain_text('"type": "welcome"')
    for text in ("Hello, what can you do?", "and a second message"):
        page.fill("#message", text)
        done_before = log.inner_text().count(DONE)
        page.click("#send")
        page.wait_for_function(DONE_AFTER, arg=[DONE, done_before])
    screenshots.take(page, "seed-page-chat")
    frames = [
        json.loads(line[3:]) for line in log.inner_text().splitlines() if line.startswith("in ")
    ]
    welcome = next(f for f in frames if f["type"] == "welcome")
    done = [f for f in frames if f["type"] == "done"]
    assert len(done) == 2 and all(re.fullmatch(r"[0-9a-f]{32}", f["trace_id"]) for f in done)
    conversation = welcome["conversation_id"]

    with JaegerClient(info.jaeger_query_url) as jaeger:
        traces = TraceFetcher(jaeger)
        for frame in done:
            trace = traces.wait(
                frame["trace_id"],
                lambda spans: {Service.DASHBOARD, Service.OMNI2} <= {s.service for s in spans},
                what="the dashboard's and OMNI2's spans",
            )
            relay = trace.one(f"{Service.DASHBOARD}:{SpanName.RELAY}")
            assert relay.attributes[Attr.CLIENT_CONTEXT] == ClientContext.NONE
            assert relay.parent_span_id is None
        reports = run_audit(jaeger, AuditQuery(conversation_id=conversation), settle_s=3)
    assert [r.trace_id for r in reports] == [f["trace_id"] for f in done]
    for report in reports:
        assert not report.broken, report.problems
        assert report.layer_states == {
            "client": NOT_TRACED,
            "dashboard": PRESENT,
            "traefik": PRESENT,
            "omni2": PRESENT,
        }
    argv = ["audit", "--conversation", conversation, "--settle", "3s"]
    assert main([*argv, "--jaeger", info.jaeger_query_url]) == 0
    out = capsys.readouterr().out
    assert "2 message(s): 0 whole, 2 whole from the first traced layer (client not traced)" in out
