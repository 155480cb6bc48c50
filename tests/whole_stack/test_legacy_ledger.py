"""A legacy service on jaeger-client in a message's chain: OMNI2 calls the usage ledger
(examples/usage_ledger) with `uber-trace-id` beside `traceparent`, the ledger continues the
trace with jaeger-client and reports to Jaeger's `jaeger` receiver over UDP; its span sits
under OMNI2's turn and the audit, by the example's spec, counts it."""

from __future__ import annotations

import asyncio
import os
import secrets
import sys
from collections.abc import Iterator

import httpx
import pytest

from omni_trace.stack import Stack
from omni_trace.stack.client import ChatReply, login, open_chat
from omni_trace.stack.paths import REPO_ROOT
from omni_trace.stack.ports import free_port
from omni_trace.traces import (
    AuditQuery,
    JaegerClient,
    TraceFetcher,
    has_services,
    load_spec,
    run_audit,
)
from otel.names import Service, SpanName
from otel.setup import create_tracer_provider
from tests.whole_stack.conftest import running_stack, serving

pytestmark = [pytest.mark.stack, pytest.mark.slow]

EXAMPLE = REPO_ROOT / "examples" / "usage_ledger"
LEDGER = "usage-ledger"


@pytest.fixture(scope="module")
def ledger_port() -> int:
    return free_port()


# The `jaeger` receiver of the one Jaeger, and of the Kafka pipeline's first collector.
@pytest.fixture(scope="module", params=["memory", "kafka"])
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, ledger_port: int
) -> Iterator[Stack]:
    omni2 = {
        "OMNI2_USAGE_WEBHOOK_URL": f"http://127.0.0.1:{ledger_port}/usage",
        # uber-trace-id beside traceparent: what a jaeger-client service reads.
        "OTEL_PROPAGATORS": "tracecontext,baggage,jaeger",
    }
    run_dir = tmp_path_factory.mktemp("ledger-stack")
    with running_stack(
        run_dir,
        secrets.token_urlsafe(32),
        service_env={"omni2": omni2},
        viewers=False,
        trace_pipeline=request.param,
    ) as s:
        yield s


@pytest.fixture(scope="module")
def ledger(
    stack: Stack, ledger_port: int, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    env = {
        **os.environ,
        "LEDGER_PORT": str(ledger_port),
        "JAEGER_AGENT": stack.info.jaeger_thrift_compact,
    }
    log = tmp_path_factory.mktemp("ledger") / "ledger.log"
    argv = [sys.executable, str(EXAMPLE / "ledger.py")]
    with serving(argv, env, f"http://127.0.0.1:{ledger_port}", log) as url:
        yield url


def _chat(stack: Stack) -> tuple[str, list[ChatReply]]:
    provider = create_tracer_provider(
        Service.CHAT_CLIENT, otlp_endpoint=stack.info.otlp_http_endpoint
    )

    async def run() -> tuple[str, list[ChatReply]]:
        token = await login(stack.info.dashboard_url, "alice", "alice-demo")
        async with open_chat(stack.info.dashboard_ws_url, token, tracer_provider=provider) as chat:
            replies = [
                await chat.send("Hello ledger"),
                await chat.send("How many products per category are in the database?"),
            ]
        assert chat.conversation_id and all(r.ok for r in replies), [r.frame for r in replies]
        return chat.conversation_id, replies

    try:
        return asyncio.run(run())
    finally:
        provider.shutdown()


def test_the_legacy_ledger_joins_each_message_chain(stack: Stack, ledger: str) -> None:
    conversation_id, replies = _chat(stack)
    spec = load_spec(EXAMPLE / "chain.yaml")
    with JaegerClient(stack.info.jaeger_query_url) as jaeger:
        traces = TraceFetcher(jaeger)
        for reply in replies:
            message = traces.wait(
                reply.trace_id,
                has_services(Service.CHAT_CLIENT, Service.DASHBOARD, Service.OMNI2, LEDGER),
                what="every layer and the ledger",
            )
            # jaeger-client's span, continued from uber-trace-id, under OMNI2's call to it.
            message.assert_chain(
                f"omni2:{SpanName.TURN} > omni2:{SpanName.USAGE_WEBHOOK} > {LEDGER}:record usage"
            )
            message.assert_attribute(f"{LEDGER}:record usage", "user.id", "alice")
            message.assert_attribute(
                f"omni2:{SpanName.USAGE_WEBHOOK}", "http.response.status_code", 200
            )
            message.assert_no_orphans()
        reports = run_audit(jaeger, AuditQuery(conversation_id=conversation_id), spec=spec)
        # Our own spec's verdicts agree: the ledger is an extra layer, not a change.
        ours = run_audit(jaeger, AuditQuery(conversation_id=conversation_id))
    assert [r.trace_id for r in reports] == [r.trace_id for r in replies]
    for report in reports:
        assert report.problems == [] and report.layers["ledger"] is True, report.status
        assert report.hops["omni2_to_ledger"] is not None and report.hops["omni2_to_ledger"] > 0
    assert all(not r.broken and "ledger" not in r.layers for r in ours)

    # The ledger counted what OMNI2 told the client.
    totals = httpx.get(f"{ledger}/usage", timeout=5).json()
    assert totals["alice"]["messages"] == 2
    assert totals["alice"]["tokens"] == sum(r.frame["result"]["tokens_used"] for r in replies)
