"""The stack's alerting rules in the real Prometheus that `omni-trace up` starts: a time to
first token budget far below what the offline model takes fires ChatFirstTokenSlow for each
layer that records it, while the same whole chains leave ChatChainBroken quiet."""

from __future__ import annotations

import asyncio
import re
import secrets
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest

from omni_trace.grafana import ALERTS_FIRING
from omni_trace.stack import Stack
from omni_trace.stack.client import ChatReply, login, open_chat
from omni_trace.traces import AuditQuery, JaegerClient, run_audit
from otel.names import Service
from otel.setup import create_tracer_provider
from tests.whole_stack.conftest import running_stack
from tests.whole_stack.polling import until_async

pytestmark = [pytest.mark.stack, pytest.mark.slow]

# The offline model pauses this long before each token, so every first token takes at least
# 40 ms at OMNI2 and at the dashboard; the budget is 5 ms.
TOKEN_DELAY_MS = 40.0
BUDGET_S = 0.005
# The layers that record chat.time_to_first_token (the dashboard relays the first token
# frame, OMNI2 sends it).
TTFT_LAYERS = {Service.DASHBOARD, Service.OMNI2}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(
        tmp_path_factory.mktemp("alerts-stack"),
        secrets.token_urlsafe(32),
        model_token_delay_ms=TOKEN_DELAY_MS,
        alert_first_token_p95_s=BUDGET_S,
    ) as s:
        assert s.info.prometheus_url, "Prometheus is installed by scripts/bootstrap"
        yield s


def _get(stack: Stack, path: str, **params: str) -> Any:
    response = httpx.get(f"{stack.info.prometheus_url}{path}", params=params, timeout=10)
    assert response.status_code == 200, (path, response.text)
    return response.json()["data"]


def _alerts(stack: Stack, name: str, state: str = "firing") -> list[dict[str, Any]]:
    alerts = _get(stack, "/api/v1/alerts")["alerts"]
    return [a for a in alerts if a["labels"]["alertname"] == name and a["state"] == state]


def _query(stack: Stack, promql: str) -> list[dict[str, Any]]:
    return list(_get(stack, "/api/v1/query", query=promql)["result"])


async def _chat(stack: Stack, tag: str) -> tuple[str, list[ChatReply]]:
    """Two rounds of two messages a few scrapes apart (a rate needs its counters to move),
    each message carrying `tag`, on one conversation."""
    provider = create_tracer_provider(
        Service.CHAT_CLIENT, otlp_endpoint=stack.info.otlp_http_endpoint
    )
    try:
        token = await login(stack.info.dashboard_url, "alice", "alice-demo")
        async with open_chat(stack.info.dashboard_ws_url, token, tracer_provider=provider) as chat:
            replies = []
            for round_ in range(2):
                if round_:
                    await asyncio.sleep(8)  # OMNI2 exports every 5 s, Prometheus scrapes every 5
                replies.append(await chat.send(f"Hello alerts {tag} round {round_}"))
                replies.append(await chat.send(f"Which tables are there? {tag} round {round_}"))
        assert chat.conversation_id and all(r.ok for r in replies), [r.frame for r in replies]
        return chat.conversation_id, replies
    finally:
        provider.shutdown()


async def test_slow_first_tokens_fire_per_layer_and_whole_chains_stay_quiet(stack: Stack) -> None:
    conversation, replies = await _chat(stack, uuid.uuid4().hex)

    def ttft_firing() -> dict[str, dict[str, Any]] | None:
        firing = {a["labels"].get("layer", ""): a for a in _alerts(stack, "ChatFirstTokenSlow")}
        return firing if firing.keys() >= TTFT_LAYERS else None

    firing = await until_async(
        "ChatFirstTokenSlow firing for the dashboard and OMNI2", ttft_firing, timeout_s=120
    )
    assert firing.keys() == TTFT_LAYERS  # no other layer records a first token
    for layer, alert in firing.items():
        # Every first token took >= 40 ms: the p95 is at least its bucket's lower bound.
        assert float(alert["value"]) >= 0.02, (layer, alert)
        assert alert["labels"]["severity"] == "warning"
        assert f"budget {BUDGET_S:g} s" in alert["annotations"]["summary"], alert
    # The Grafana dashboard's alerts panel charts the same (its query, answered).
    charted = {
        (r["metric"]["alertname"], r["metric"].get("layer")) for r in _query(stack, ALERTS_FIRING)
    }
    assert {("ChatFirstTokenSlow", layer) for layer in TTFT_LAYERS} <= charted

    # The same messages' chains are whole (the audit, the way a user runs it), and once the
    # flow view's audit has counted them and the rule has been evaluated since, no broken
    # chain alert is pending or firing.
    with JaegerClient(stack.info.jaeger_query_url) as jaeger:
        reports = run_audit(jaeger, AuditQuery(conversation_id=conversation))
    assert sorted(r.trace_id for r in reports) == sorted(r.trace_id for r in replies)
    assert not any(r.broken for r in reports), [r.problems for r in reports]

    def counted() -> float:
        found = _query(stack, 'sum(omni_trace_audit_messages_total{chain=~"whole|not_traced"})')
        return float(found[0]["value"][1]) if found else 0.0

    await until_async(
        "the audit's count of the whole chains in Prometheus", lambda: counted() >= 4, 90
    )
    seen = time.time()
    broken = _query(stack, 'sum(omni_trace_audit_messages_total{chain="broken"})')
    assert float(broken[0]["value"][1]) == 0

    def evaluated_since() -> dict[str, Any] | None:
        rules = [
            rule
            for group in _get(stack, "/api/v1/rules", type="alert")["groups"]
            for rule in group["rules"]
            if rule["name"] == "ChatChainBroken"
        ]
        (rule,) = rules
        return rule if _rfc3339(rule["lastEvaluation"]) > seen else None

    rule = await until_async("ChatChainBroken evaluated after the count", evaluated_since, 30)
    assert rule["health"] == "ok", rule
    assert rule["state"] == "inactive" and rule["alerts"] == [], rule
    assert _alerts(stack, "ChatChainBroken", "firing") == []
    assert _alerts(stack, "ChatChainBroken", "pending") == []


def _rfc3339(text: str) -> float:
    """Prometheus' timestamps (RFC 3339 with up to nanoseconds: `...T14:50:01.123456789Z`)
    as Unix seconds."""
    found = re.fullmatch(r"([^.Z+]+(?:T[^.Z+-]+)?)(\.\d+)?(Z|[+-]\d\d:\d\d)", text)
    assert found, text
    whole, fraction, zone = found.groups()
    moment = datetime.fromisoformat(whole + ("+00:00" if zone == "Z" else zone))
    return moment.timestamp() + float(fraction or 0)
