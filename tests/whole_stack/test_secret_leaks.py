"""Secrets and message text stay out of every span and log line of the running stack.

- The usage webhook's URL carries credentials (`?apikey=`, an `X-Amz-Signature=`, a userinfo
  password): OMNI2 records the URL on its CLIENT span and httpx logs each request. Only
  `token`-like names were masked, and userinfo dropped only on that span.
- A database error while OMNI2 stores a message: SQLAlchemy's error text listed the bound
  parameters, the user's and the model's words, and OMNI2 logged it.

Each test scans everything the stack exported to Jaeger (every service's traces, as stored)
and every log file of the run."""

from __future__ import annotations

import asyncio
import json
import secrets
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import make_url

from omni_trace.stack import Stack
from omni_trace.stack.client import ChatReply, login, open_chat
from omni_trace.traces import JaegerClient, has_spans_named
from otel.names import Attr, Service, SpanName
from tests.whole_stack.conftest import client_provider, running_stack

pytestmark = [pytest.mark.stack, pytest.mark.slow]

API_KEY = f"apikey-{secrets.token_hex(12)}"
SIGNATURE = f"sig-{secrets.token_hex(12)}"
HOOK_PASSWORD = f"pw-{secrets.token_hex(12)}"
MARKER = f"canary-{uuid.uuid4().hex}"


class _Hook(BaseHTTPRequestHandler):
    """The ledger OMNI2 reports usage to: remembers each request's path, answers 200."""

    seen: list[str] = []

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        type(self).seen.append(self.path)
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"recorded": true}')

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture(scope="module")
def hook() -> Iterator[tuple[int, list[str]]]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], _Hook.seen
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, hook: tuple[int, list[str]]) -> Iterator[Stack]:
    port, _ = hook
    url = (
        f"http://ledger:{HOOK_PASSWORD}@127.0.0.1:{port}/usage"
        f"?apikey={API_KEY}&X-Amz-Signature={SIGNATURE}&plan=basic"
    )
    with running_stack(
        tmp_path_factory.mktemp("secrets-stack"),
        secrets.token_urlsafe(32),
        service_env={"omni2": {"OMNI2_USAGE_WEBHOOK_URL": url}},
        viewers=False,
    ) as s:
        yield s


def _chat(stack: Stack, *texts: str) -> list[ChatReply]:
    async def run() -> list[ChatReply]:
        token = await login(stack.info.dashboard_url, "alice", "alice-demo")
        with client_provider(stack) as provider:
            async with open_chat(
                stack.info.dashboard_ws_url, token, tracer_provider=provider
            ) as chat:
                return [await chat.send(text) for text in texts]

    return asyncio.run(run())


def _everything_exported(stack: Stack) -> str:
    """Every trace of every service, as Jaeger returns them (attributes, events, links,
    resources, statuses)."""
    with JaegerClient(stack.info.jaeger_query_url) as jaeger:
        services = jaeger.services()
    assert Service.OMNI2 in services, services
    dumps = []
    for service in services:
        response = httpx.get(
            f"{stack.info.jaeger_query_url.rstrip('/')}/api/traces",
            params={"service": service, "lookback": "1h", "limit": 1000},
            timeout=10,
        )
        response.raise_for_status()
        dumps.append(response.text)
    return "\n".join(dumps)


def _every_log(stack: Stack) -> str:
    return "\n".join(
        path.read_text(errors="replace")
        for path in sorted(stack.logs_dir.rglob("*"))
        if path.is_file()
    )


def _wait_for(what: str, check: Callable[[], object], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what} not seen within {timeout:g} s"
        time.sleep(0.25)


def test_webhook_credentials_reach_no_span_and_no_log(
    stack: Stack, hook: tuple[int, list[str]]
) -> None:
    _, seen = hook
    (reply,) = _chat(stack, "Hello ledger")
    assert reply.ok, reply.frame
    _wait_for("the webhook call", lambda: seen)
    assert f"apikey={API_KEY}" in seen[0], "the call itself keeps its credentials"
    with JaegerClient(stack.info.jaeger_query_url) as jaeger:
        spans = jaeger.wait_for_trace(
            reply.trace_id,
            has_spans_named((Service.OMNI2, SpanName.USAGE_WEBHOOK)),
            what="the webhook span",
        )
    (webhook,) = [s for s in spans if s.name == SpanName.USAGE_WEBHOOK]
    url = str(webhook.attributes[Attr.URL_FULL])
    assert url.startswith("http://ledger:REDACTED@127.0.0.1:"), url
    assert "apikey=REDACTED" in url and "X-Amz-Signature=REDACTED" in url, url
    assert "plan=basic" in url, url

    exported, logs = _everything_exported(stack), _every_log(stack)
    for secret in (API_KEY, SIGNATURE, HOOK_PASSWORD):
        assert secret not in exported, f"{secret[:6]}... in an exported span"
        assert secret not in logs, f"{secret[:6]}... in a log file"


def _fail_inserts_containing(database_url: str, word: str) -> None:
    """A real database error for one message: a trigger aborts the insert of its rows."""
    database = make_url(database_url).database
    assert database, database_url
    conn = sqlite3.connect(Path(database), timeout=10)
    try:
        with conn:
            conn.execute(
                "CREATE TRIGGER IF NOT EXISTS refuse_canary BEFORE INSERT ON messages "
                f"WHEN instr(NEW.content, '{word}') > 0 "
                "BEGIN SELECT RAISE(ABORT, 'refused by the test trigger'); END"
            )
    finally:
        conn.close()


def test_a_database_error_during_a_message_leaves_its_text_nowhere(stack: Stack) -> None:
    _fail_inserts_containing(stack.info.omni2_database_url, MARKER)
    (reply,) = _chat(stack, f"please keep this to yourself: {MARKER}")
    assert reply.ok, reply.frame
    omni2_log = stack.logs_dir / "omni2.log"
    failed = f"could not store the message of trace {reply.trace_id}"
    _wait_for("the failed write in omni2.log", lambda: failed in omni2_log.read_text())
    with JaegerClient(stack.info.jaeger_query_url) as jaeger:
        spans = jaeger.wait_for_trace(
            reply.trace_id,
            has_spans_named((Service.OMNI2, SpanName.PERSIST)),
            what="the failed chat.persist span",
        )
    persist = [s for s in spans if s.name == SpanName.PERSIST]
    assert any(s.attributes.get(Attr.ERROR_TYPE) for s in persist), persist

    exported, logs = _everything_exported(stack), _every_log(stack)
    assert "refused by the test trigger" in logs, "the database's own reason is kept"
    assert MARKER not in exported, "the message text in an exported span"
    assert MARKER not in logs, "the message text in a log file"
    assert json.dumps(MARKER) not in logs
