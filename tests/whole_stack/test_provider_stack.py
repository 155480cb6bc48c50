"""OMNI2 on a real provider's wire protocol, end to end: an OpenAI-compatible server (a local
fake that replays recorded exchanges) chosen by settings, its error, a tool call through MCP,
and the API key nowhere in Jaeger or the logs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider

from omni_trace.stack import Stack
from omni_trace.stack.client import login, open_chat
from omni_trace.traces import JaegerClient, TraceFetcher, has_spans_named
from otel.names import Attr, Flow, Service, SpanName
from otel.setup import create_tracer_provider
from services.db.repository import flow as flow_repo
from tests.db import Admin
from tests.fake_openai import KEY, MODEL, FakeOpenAI
from tests.whole_stack.conftest import running_stack

pytestmark = [pytest.mark.stack, pytest.mark.slow]


@pytest.fixture(scope="module")
def openai_stack(
    tmp_path_factory: pytest.TempPathFactory, jwt_secret: str, fake_openai: FakeOpenAI
) -> Iterator[Stack]:
    env = fake_openai.omni2_env()
    with running_stack(
        tmp_path_factory.mktemp("openai"), jwt_secret, service_env={"omni2": env}
    ) as stack:
        yield stack


_tool_trace = has_spans_named(
    (Service.MCP_TOOLS, SpanName.mcp("tools/call", "database_query")),
    (Service.OMNI2, SpanName.execute_tool("database_query")),
    (Service.OMNI2, SpanName.TURN),
    (Service.OMNI2, "POST"),
)
HTTPX = "opentelemetry.instrumentation.httpx"


async def test_provider_error_then_tool_call_and_the_key_never_leaks(
    openai_stack: Stack, fake_openai: FakeOpenAI
) -> None:
    fake_openai.queue += ["openai_bad_key", "openai_tool_calls", "openai_answer"]
    provider: TracerProvider = create_tracer_provider(
        Service.CHAT_CLIENT, otlp_endpoint=openai_stack.info.otlp_http_endpoint
    )
    token = await login(openai_stack.info.dashboard_url, "bob", "bob-demo")
    async with open_chat(
        openai_stack.info.dashboard_ws_url, token, tracer_provider=provider
    ) as chat:
        failed = await chat.send("How many products are there?")
        answered = await chat.send("How many products are there?")
    provider.force_flush()
    provider.shutdown()

    assert failed.frame["code"] == "provider_auth"
    # A fixed reason reaches the user; the provider's own words stay on the span.
    assert failed.error == "The model provider refused OMNI2's credentials"
    assert answered.ok, answered.frame
    assert answered.text == "There are 6 products in the database."
    assert answered.frame["result"]["tools_used"] == ["database_query"]
    assert fake_openai.auth == [f"Bearer {KEY}"] * 3
    assert fake_openai.requests[0]["model"] == MODEL
    tool_result = fake_openai.requests[2]["messages"][-1]
    assert tool_result["role"] == "tool" and '"rows": [[6]]' in tool_result["content"]

    with JaegerClient(openai_stack.info.jaeger_query_url) as jaeger:
        traces = TraceFetcher(jaeger)
        spans = traces.wait(answered.trace_id, _tool_trace, what="tool call to MCP")
        errored = traces.wait(
            failed.trace_id,
            has_spans_named(
                (Service.OMNI2, SpanName.model_call(MODEL)), (Service.OMNI2, SpanName.TURN)
            ),
            what="the failed message",
        )
        raw = [
            httpx.get(f"{jaeger.query_url}/api/v3/traces/{t}").text
            for t in (answered.trace_id, failed.trace_id, chat.session_trace_id)
        ]
    models = [s for s in spans if s.name == SpanName.model_call(MODEL)]
    spans.expect(
        [m.attributes.get(Attr.GEN_AI_PROVIDER) for m in models] == ["openai", "openai"]
        and models[1].attributes.get(Attr.GEN_AI_RESPONSE_MODEL) == "gpt-4o-mini-2024-07-18",
        "two openai model calls with GenAI attributes",
    )
    # The SDK's requests: a CLIENT span each, from the httpx instrumentation, under the call.
    requests = spans.select(f"{Service.OMNI2}:POST[kind=CLIENT]")
    assert len(requests) == 2 and all(r.scope == HTTPX for r in requests), spans.tree()
    spans.assert_chain(f"{Service.OMNI2}:{SpanName.model_call(MODEL)} > {Service.OMNI2}:POST")
    spans.assert_attribute(f"{Service.OMNI2}:POST", "http.response.status_code", 200)
    tool = spans.one(f"{Service.OMNI2}:{SpanName.execute_tool('database_query')}")
    server = spans.one(f"{Service.MCP_TOOLS}:{SpanName.mcp('tools/call', 'database_query')}")
    spans.expect(
        tool.attributes.get(Attr.GEN_AI_TOOL_CALL_ID) == "call_Qk9vYB2cX7mN1pL4sT8wR3eZ"
        and server.attributes.get(Attr.CONVERSATION_ID) == chat.conversation_id,
        "the provider's call id on execute_tool; the MCP server span in the conversation",
    )
    model = errored.one(f"{Service.OMNI2}:{SpanName.model_call(MODEL)}")
    errored.expect(
        model.status == "ERROR" and model.attributes.get(Attr.ERROR_TYPE) == "provider_auth",
        "the model span records the provider error",
    )
    turn = errored.one(f"{Service.OMNI2}:{SpanName.TURN}")
    errored.expect(
        "Incorrect API key provided" in turn.status_message,
        "the provider's detail is on OMNI2's chat.turn",
    )
    admin = Admin(openai_stack.info.omni2_database_url)
    events = admin(lambda s: flow_repo.flow_events(s, trace_id=failed.trace_id))
    assert [(e.kind, e.status) for e in events if e.status == "error"] == [
        (Flow.MODEL_CALL, "error"),
        (Flow.ERROR, "error"),
    ]
    assert all(KEY not in doc for doc in raw), "the API key reached Jaeger"
    for log in Path(openai_stack.info.logs_dir).glob("*.log"):
        assert KEY not in log.read_text(errors="replace"), f"the API key is in {log.name}"
