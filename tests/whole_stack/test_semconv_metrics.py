"""The OpenTelemetry GenAI and MCP metrics in a real Prometheus after traffic: each series
under the name Jaeger's collector gives it (dots to underscores, `_seconds` for a unit of
seconds), from the service that records it, with the labels the conventions require."""

from __future__ import annotations

from typing import Any

import pytest

from omni_trace.flowview.hops import prometheus_name
from omni_trace.stack import Stack
from omni_trace.stack.plugin import ChatFactory
from otel.names import METRICS, Metric, Service
from services.common.tokens import issue_token
from tests.db import Admin
from tests.otel.test_semconv_metrics import CONVENTIONS
from tests.whole_stack.conftest import new_user
from tests.whole_stack.polling import until_async
from tests.whole_stack.test_metrics import _query

pytestmark = pytest.mark.stack

RECORDED_BY = {
    Metric.TOKEN_USAGE: Service.OMNI2,
    Metric.OPERATION_DURATION: Service.OMNI2,
    Metric.TIME_TO_FIRST_CHUNK: Service.OMNI2,
    Metric.TIME_PER_OUTPUT_CHUNK: Service.OMNI2,
    Metric.SERVER_REQUEST_DURATION: Service.OMNI2,
    Metric.SERVER_TIME_TO_FIRST_TOKEN: Service.OMNI2,
    Metric.SERVER_TIME_PER_OUTPUT_TOKEN: Service.OMNI2,
    Metric.MCP_CLIENT_DURATION: Service.OMNI2,
    Metric.MCP_SERVER_DURATION: Service.MCP_TOOLS,
}


def _label(attribute: str) -> str:
    return attribute.replace(".", "_")


def _series(stack: Stack, metric: str, service: str) -> list[dict[str, str]]:
    name = prometheus_name(metric, METRICS[metric].unit)
    return [r["metric"] for r in _query(stack, f'{name}_count{{exported_job="{service}"}}')]


@pytest.mark.slow  # waits on exports: not in --quick
async def test_the_genai_and_mcp_metrics_reach_prometheus_with_their_required_labels(
    stack: Stack, omni_chat: ChatFactory, admin: Admin, jwt_secret: str
) -> None:
    assert stack.info.prometheus_url, "Prometheus is installed by scripts/bootstrap"
    assert set(RECORDED_BY) == set(CONVENTIONS)
    user = new_user(admin)
    async with omni_chat(token=issue_token(user, jwt_secret)) as chat:
        replies = [
            await chat.send("Hello conventions"),
            # The offline model calls database_query: MCP on both sides.
            await chat.send("How many products per category are in the database?"),
        ]
    assert all(r.ok for r in replies), [r.frame for r in replies]
    assert replies[1].frame["result"]["tools_used"] == ["database_query"]

    def missing() -> dict[str, Any]:
        absent: dict[str, Any] = {}
        for metric, service in RECORDED_BY.items():
            required = {_label(a) for a in CONVENTIONS[metric][2]}
            series = _series(stack, metric, service)
            if not any(required <= set(labels) for labels in series):
                absent[metric] = series[:3]
        return absent

    await until_async("every GenAI and MCP series with its required labels", lambda: not missing())

    # This user's tokens under the standard name, by token type, as the done frames said.
    usage = prometheus_name(Metric.TOKEN_USAGE, METRICS[Metric.TOKEN_USAGE].unit)
    results = [r.frame["result"] for r in replies]
    expected = {
        "input": sum(r["tokens_input"] for r in results),
        "output": sum(r["tokens_output"] for r in results),
    }

    def tokens() -> dict[str, float]:
        found = _query(stack, f'sum by (gen_ai_token_type) ({usage}_sum{{user_id="{user}"}})')
        return {r["metric"]["gen_ai_token_type"]: float(r["value"][1]) for r in found}

    await until_async(f"{user}'s tokens by type", lambda: tokens() == expected)

    # The tool call, on both sides of MCP, as the conventions label a tools/call.
    for metric, service in (
        (Metric.MCP_CLIENT_DURATION, Service.OMNI2),
        (Metric.MCP_SERVER_DURATION, Service.MCP_TOOLS),
    ):
        calls = [
            labels
            for labels in _series(stack, metric, service)
            if labels.get("mcp_method_name") == "tools/call"
            and labels.get("gen_ai_tool_name") == "database_query"
        ]
        assert calls, (metric, _series(stack, metric, service))
        assert all(c["gen_ai_operation_name"] == "execute_tool" for c in calls)
    # OMNI2's model calls carry the request and response model.
    (call, *_) = _series(stack, Metric.OPERATION_DURATION, Service.OMNI2)
    assert call["gen_ai_request_model"] and call["gen_ai_response_model"], call
