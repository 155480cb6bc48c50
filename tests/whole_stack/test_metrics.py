"""The stack's metrics in a real Prometheus: the services' own (time to first token per layer,
tokens and cost per user), the audit's verdicts from the flow view, and every query of the
Grafana dashboards in grafana/dashboards/ answered after traffic."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import httpx
import pytest

from omni_trace.grafana import ALERTS_FIRING, dashboards, queries
from omni_trace.stack import Stack
from omni_trace.stack.client import ChatReply
from omni_trace.stack.jaeger_ui import jaeger_ui_config
from omni_trace.stack.plugin import ChatFactory
from omni_trace.traces import TraceFetcher
from otel.names import Attr, Service, SpanName
from services.common.tokens import issue_token
from tests.db import Admin
from tests.whole_stack.conftest import new_user
from tests.whole_stack.polling import until_async

pytestmark = pytest.mark.stack


def _query(stack: Stack, promql: str) -> list[dict[str, Any]]:
    response = httpx.get(
        f"{stack.info.prometheus_url}/api/v1/query", params={"query": promql}, timeout=10
    )
    assert response.status_code == 200, (promql, response.text)
    return list(response.json()["data"]["result"])


async def _chat(omni_chat: ChatFactory, user: str, secret: str) -> list[ChatReply]:
    async with omni_chat(token=issue_token(user, secret)) as chat:
        replies = [
            await chat.send("Hello metrics"),
            await chat.send("How many products per category are in the database?"),
        ]
    assert all(r.ok for r in replies), [r.frame for r in replies]
    return replies


@pytest.mark.slow  # waits on exports or timing: not in --quick
async def test_usage_per_user_and_first_token_per_layer_reach_prometheus(
    stack: Stack,
    omni_chat: ChatFactory,
    omni_traces: TraceFetcher,
    admin: Admin,
    jwt_secret: str,
) -> None:
    assert stack.info.prometheus_url, "Prometheus is installed by scripts/bootstrap"
    user = new_user(admin)
    replies = await _chat(omni_chat, user, jwt_secret)
    # What OMNI2 told the client and recorded on its turn spans, message by message.
    results = [r.frame["result"] for r in replies]
    costs = []
    for reply in replies:
        message, _ = omni_traces.message(reply, connection_closed=False)
        turn = message.one(f"{Service.OMNI2}:{SpanName.TURN}")
        costs.append(turn.attributes[Attr.USAGE_COST])

    expected = {
        "input": sum(r["tokens_input"] for r in results),
        "output": sum(r["tokens_output"] for r in results),
    }

    def tokens_by_type() -> dict[str, float]:
        return {
            r["metric"]["gen_ai_token_type"]: float(r["value"][1])
            for r in _query(
                stack,
                f'sum by (gen_ai_token_type) (gen_ai_client_token_usage_sum{{user_id="{user}"}})',
            )
        }

    # OMNI2 exports every few seconds: a scrape may hold the first message's usage only.
    by_type = await until_async(
        f"{user}'s tokens in Prometheus",
        lambda: (found := tokens_by_type()) == expected and found,
    )
    assert by_type == expected
    (cost,) = _query(stack, f'sum(chat_usage_cost_total{{user_id="{user}"}})')
    assert float(cost["value"][1]) == pytest.approx(sum(costs), rel=1e-6)
    assert sum(costs) == pytest.approx(sum(r["cost"] for r in results), abs=1e-6)

    # Time to first token: a histogram per layer that saw the first token frame.
    # The recording service is `exported_job` (Prometheus keeps `job` for its scrape job).
    # Each service exports on its own clock: wait for both, not only OMNI2's usage above.
    def first_tokens() -> dict[str, float]:
        return {
            r["metric"]["exported_job"]: float(r["value"][1])
            for r in _query(stack, "sum by (exported_job) (chat_time_to_first_token_seconds_count)")
        }

    layers = await until_async(
        "both layers' first tokens in Prometheus",
        lambda: (
            (found := first_tokens()).get(Service.DASHBOARD, 0) >= 2
            and found.get(Service.OMNI2, 0) >= 2
            and found
        ),
    )
    assert layers.keys() >= {Service.DASHBOARD, Service.OMNI2}
    assert layers[Service.DASHBOARD] >= 2 and layers[Service.OMNI2] >= 2


@pytest.mark.slow  # waits on exports or timing: not in --quick
async def test_every_dashboard_query_answers_after_traffic(
    stack: Stack,
    omni_chat: ChatFactory,
    admin: Admin,
    jwt_secret: str,
) -> None:
    # Two rounds a few scrapes apart: a rate needs its counters to move.
    for _ in range(2):
        await _chat(omni_chat, new_user(admin), jwt_secret)
        await asyncio.sleep(6)
    (board,) = dashboards().values()
    # The alerts panel's ALERTS series exists only while an alert fires: its query is
    # answered after traffic over a budget in tests/whole_stack/test_alerts.py.
    pending = {
        (title, expr.replace("$__rate_interval", "1m").replace("$__range", "15m"))
        for title, expr in queries(board)
        if expr != ALERTS_FIRING
    }
    assert len(pending) >= 9
    assert not re.search(r"\$\w", " ".join(expr for _, expr in pending)), "a variable left"

    def unanswered() -> set[tuple[str, str]]:
        pending.difference_update({(t, e) for t, e in pending if _query(stack, e)})
        return pending

    await until_async("every panel's query has a series", lambda: not unanswered() or None, 90)

    # The audit's gauges count this traffic's messages as whole and answered once they have
    # settled (10 s), and the flow view has been scraped since (every 15 s).
    whole = 'sum(omni_trace_audit_messages{chain="whole",outcome="ok"})'
    await until_async(
        "the audit's whole chains in Prometheus",
        lambda: float(_query(stack, whole)[0]["value"][1]) >= 4,
        60,
    )


async def test_the_flow_view_serves_the_audit_to_prometheus(stack: Stack) -> None:
    exposition = httpx.get(f"{stack.info.flowview_url}/metrics", timeout=30)
    assert exposition.status_code == 200
    assert exposition.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples = re.findall(r"^(omni_trace_audit_\w+)\{?([^}\s]*)\}? (\S+)$", exposition.text, re.M)
    names = {name for name, _, _ in samples}
    assert names == {
        "omni_trace_audit_messages_total",
        "omni_trace_audit_missing_layer_total",
        "omni_trace_audit_not_traced_layer_total",
        "omni_trace_audit_messages",
        "omni_trace_audit_missing_layer",
        "omni_trace_audit_not_traced_layer",
        "omni_trace_audit_stalls_total",
        "omni_trace_audit_stalls",
        "omni_trace_audit_judged_total",
        "omni_trace_audit_cpu_seconds_total",
        "omni_trace_audit_seconds",
        "omni_trace_audit_update_failed",
        "omni_trace_audit_watermark_timestamp_seconds",
    }
    assert all(float(value) >= 0 for _, _, value in samples)
    assert "# TYPE omni_trace_audit_messages_total counter" in exposition.text
    assert "omni_trace_audit_update_failed 0" in exposition.text

    def health() -> dict[str, str]:
        targets = httpx.get(f"{stack.info.prometheus_url}/api/v1/targets", timeout=10).json()
        return {t["labels"]["job"]: t["health"] for t in targets["data"]["activeTargets"]}

    await until_async(
        "Prometheus scrapes Jaeger and the flow view",
        lambda: health() == {"jaeger": "up", "flowview": "up"},
        30,
    )


def test_jaeger_ui_links_traces_and_conversations_to_the_flow_view(stack: Stack) -> None:
    """Jaeger's own loader reads the UI config and injects it into its page (our build has a
    placeholder page with the same injection point as the real UI)."""
    page = httpx.get(f"{stack.info.jaeger_query_url}/", timeout=10).text
    found = re.search(r"JAEGER_CONFIG = (\{.*?\});", page, re.S)
    assert found, page[:500]
    assert json.loads(found.group(1)) == jaeger_ui_config(stack.info.flowview_url)
