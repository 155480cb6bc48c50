"""`omni-trace audit` on a healthy run, and after breaking a hop (a layer with tracing off)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import pytest

from omni_trace.cli import main
from omni_trace.stack import Stack
from omni_trace.stack.client import ChatConnection, login, open_chat
from omni_trace.stack.plugin import ChatFactory
from omni_trace.traces import (
    AuditQuery,
    JaegerClient,
    TraceFetcher,
    has_services,
    run_audit,
    wait_for_chain,
)
from omni_trace.traces.chain import HOPS
from otel.names import Service
from otel.setup import create_tracer_provider
from tests.whole_stack.conftest import running_stack

pytestmark = [pytest.mark.stack, pytest.mark.slow]


async def _chat(
    connection: AbstractAsyncContextManager[ChatConnection],
    traces: TraceFetcher,
    *texts: str,
    layers: tuple[str, ...] = (Service.CHAT_CLIENT, Service.DASHBOARD),
) -> str:
    """Chat on `connection`, then wait until Jaeger holds each message's spans of `layers`
    (audit's input)."""
    async with connection as chat:
        replies = [await chat.send(text) for text in texts]
    assert all(reply.ok for reply in replies)
    for reply in replies:
        traces.wait(reply.trace_id, has_services(*layers), what=f"{layers}")
    assert chat.conversation_id
    return chat.conversation_id


def _audit_cli(
    stack: Stack, conversation: str, capsys: pytest.CaptureFixture[str]
) -> tuple[int, dict[str, object]]:
    code = main(
        [
            "audit",
            "--conversation",
            conversation,
            "--json",
            "--settle",
            "3s",
            "--jaeger",
            stack.info.jaeger_query_url,
        ]
    )
    return code, json.loads(capsys.readouterr().out)


async def test_healthy_run_has_no_broken_chain(
    stack: Stack,
    omni_chat: ChatFactory,
    omni_jaeger: JaegerClient,
    omni_traces: TraceFetcher,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    conversation = await _chat(omni_chat("alice"), omni_traces, "audit me", "and me", "and me too")
    reports = run_audit(omni_jaeger, AuditQuery(conversation_id=conversation))
    assert len(reports) == 3, [r.trace_id for r in reports]
    for report in reports:
        assert not report.broken, report.problems
        assert all(report.layers.values()), report.layers
        assert report.conversation_id == conversation and report.user_id == "alice"
        for hop in (h for h in HOPS if h != "tools"):
            value = report.hops[hop]
            assert value is not None and value >= 0, (hop, value)
        assert report.hops["total"] >= report.hops["model"]  # type: ignore[operator]

    code, data = _audit_cli(stack, conversation, capsys)
    assert code == 0
    assert data["broken"] == 0 and len(data["messages"]) == 3  # type: ignore[arg-type]

    # Against the running stack (its stack file), each message's row leads to the flow view.
    stack_file = tmp_path / "stack.json"
    stack.info.write(stack_file)
    args = ["audit", "--conversation", conversation, "--settle", "3s"]
    assert main([*args, "--stack-file", str(stack_file)]) == 0
    out = capsys.readouterr().out
    for report in reports:
        assert f"{stack.info.flowview_url}/#/trace/{report.trace_id}" in out
    assert main([*args, "--json", "--stack-file", str(stack_file)]) == 0
    messages = json.loads(capsys.readouterr().out)["messages"]
    assert [m["flow_view_url"] for m in messages] == [
        f"{stack.info.flowview_url}/#/trace/{r.trace_id}" for r in reports
    ]


@pytest.fixture(scope="module")
def untraced_omni2(tmp_path_factory: pytest.TempPathFactory, jwt_secret: str) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("broken"), jwt_secret) as stack:
        stack.restart_service("omni2", {"OTEL_SDK_DISABLED": "true"})
        yield stack


async def test_audit_names_the_missing_layer_and_fails(
    untraced_omni2: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    provider = create_tracer_provider(
        Service.CHAT_CLIENT, otlp_endpoint=untraced_omni2.info.otlp_http_endpoint
    )
    info = untraced_omni2.info
    token = await login(info.dashboard_url, "alice", "alice-demo")
    with JaegerClient(info.jaeger_query_url) as jaeger:
        traces = TraceFetcher(jaeger, provider)  # flushes the chat client before it reads
        conversation = await _chat(
            open_chat(info.dashboard_ws_url, token, tracer_provider=provider),
            traces,
            "is omni2 traced?",
        )
        code, data = _audit_cli(untraced_omni2, conversation, capsys)
        assert code == 1
        (message,) = data["messages"]  # type: ignore[misc]
        assert message["layers"] == {
            "client": True,
            "dashboard": True,
            "traefik": False,
            "omni2": False,
        }
        assert "missing layer omni2" in message["problems"]

        # The dashboard with tracing off as well: the frame context passes through untouched,
        # so only the client recorded the message. A client's span is its word alone: it
        # neither makes a conversation's message (no server layer recorded one) nor a broken
        # chain (a dashboard that sampled the connection out leaves the same), and the
        # audit says so.
        untraced_omni2.restart_service("dashboard", {"OTEL_SDK_DISABLED": "true"})
        conversation = await _chat(
            open_chat(info.dashboard_ws_url, token, tracer_provider=provider),
            traces,
            "and the dashboard?",
            layers=(Service.CHAT_CLIENT,),
        )
    provider.shutdown()
    jaeger_url = untraced_omni2.info.jaeger_query_url
    args = ["audit", "--settle", "3s", "--jaeger", jaeger_url]
    assert main([*args, "--conversation", conversation]) == 1
    assert "no message traces found" in capsys.readouterr().err
    assert main([*args, "--since", "2m", "--json"]) == 1  # the first message is still broken
    data = json.loads(capsys.readouterr().out)
    (client_only,) = [m for m in data["messages"] if m["client_only"]]
    assert not client_only["broken"] and client_only["layers"]["dashboard"] is False
    assert data["client_only"] == 1


async def test_trace_show_draws_message_and_session_waterfalls(
    stack: Stack,
    omni_chat: ChatFactory,
    omni_jaeger: JaegerClient,
    omni_traces: TraceFetcher,
    capsys: pytest.CaptureFixture[str],
) -> None:
    conversation = await _chat(omni_chat("alice"), omni_traces, "show me")
    (trace_id,) = omni_jaeger.find_trace_ids(
        Service.CHAT_CLIENT, {"gen_ai.conversation.id": conversation}, operation="chat.message"
    )
    wait_for_chain(omni_jaeger, trace_id)
    code = main(
        ["trace", "show", trace_id, "--width", "100", "--jaeger", stack.info.jaeger_query_url]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert f"message trace {trace_id}" in out and "linked session trace" in out
    assert "omni2 chat.turn" in out and "traefik ReverseProxy" in out
    assert "chain: ok" in out
    assert "flow view:" not in out  # --jaeger: not necessarily this stack's traces
