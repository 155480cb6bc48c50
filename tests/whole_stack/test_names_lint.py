"""`omni-trace names --lint` against the stack's real Jaeger: spans with deprecated and
misspelled GenAI names, sent by a service of another team through the internal OTLP path
(with the run's credential), are named with what to use instead; our own traffic lints
clean; an unreachable Jaeger is an error, not a finding."""

from __future__ import annotations

import re
import secrets
import time
import uuid

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from omni_trace.cli import main
from omni_trace.stack import Stack
from omni_trace.stack.plugin import ChatFactory
from omni_trace.traces import JaegerClient
from otel.names import OWN_SERVICES, Service

pytestmark = pytest.mark.stack


def _kv(key: str, value: str | int) -> KeyValue:
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=value))


def _legacy_genai_spans(service: str) -> bytes:
    """A model call as an instrumentation from before semconv v1.37 records it, and a typo."""
    now = time.time_ns()
    span = Span(
        trace_id=secrets.token_bytes(16),
        span_id=secrets.token_bytes(8),
        name="chat gpt-4o",
        kind=Span.SPAN_KIND_CLIENT,
        start_time_unix_nano=now - 5_000_000,
        end_time_unix_nano=now,
        attributes=[
            _kv("gen_ai.system", "openai"),
            _kv("gen_ai.usage.prompt_tokens", 12),
            _kv("gen_ai.usage.completion_tokens", 30),
            _kv("gen_ai.request.modle", "gpt-4o"),
            _kv("gen_ai.operation.name", "chat"),
        ],
    )
    return ExportTraceServiceRequest(
        resource_spans=[
            ResourceSpans(
                resource=Resource(attributes=[_kv("service.name", service)]),
                scope_spans=[ScopeSpans(spans=[span])],
            )
        ]
    ).SerializeToString()


def _lint(stack: Stack, *services: str) -> int:
    args = ["names", "--lint", "--jaeger", stack.info.jaeger_query_url, "--minutes", "30"]
    for service in services:
        args += ["--service", service]
    return main(args)


async def test_lint_names_deprecated_and_misspelled_genai_keys(
    stack: Stack, omni_jaeger: JaegerClient, capsys: pytest.CaptureFixture[str]
) -> None:
    assert stack.info.otlp_internal_endpoint, "the stack's services send on the internal path"
    service = f"legacy-genai-{uuid.uuid4().hex[:8]}"
    answer = httpx.post(
        f"{stack.info.otlp_internal_endpoint}/v1/traces",
        content=_legacy_genai_spans(service),
        headers={
            "Content-Type": "application/x-protobuf",
            "Authorization": stack.otlp_authorization,
        },
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    deadline = time.monotonic() + 30
    while service not in omni_jaeger.services():
        assert time.monotonic() < deadline, f"{service} never reached Jaeger"
        time.sleep(0.5)
    capsys.readouterr()

    assert _lint(stack, service) == 1
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith(service)]
    expected = {
        "gen_ai.system": "deprecated: use gen_ai.provider.name",
        "gen_ai.usage.prompt_tokens": "deprecated: use gen_ai.usage.input_tokens",
        "gen_ai.usage.completion_tokens": "deprecated: use gen_ai.usage.output_tokens",
        "gen_ai.request.modle": "unknown: did you mean gen_ai.request.model?",
    }
    assert len(lines) == len(expected), out
    for key, problem in expected.items():
        (line,) = [line for line in lines if f" {key} " in line]
        # service, span name, key, count (one span), what is wrong.
        assert " chat gpt-4o " in line and f" {key} " in line, line
        assert re.search(rf" 1 +{re.escape(problem)}$", line), line
    assert "gen_ai.operation.name" not in out


async def test_our_own_traffic_lints_clean(
    stack: Stack, omni_chat: ChatFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    async with omni_chat("alice") as chat:
        # A model call and an MCP tool call: every GenAI and MCP name we and the SDK emit.
        reply = await chat.send("How many products per category are in the database?")
    assert reply.ok and reply.frame["result"]["tools_used"] == ["database_query"], reply.frame
    capsys.readouterr()
    assert _lint(stack, *OWN_SERVICES, Service.TRAEFIK) == 0, capsys.readouterr().out
    out = capsys.readouterr().out
    assert "no deprecated or unknown GenAI/MCP attribute names" in out
    assert "read 0 spans" not in out, out
