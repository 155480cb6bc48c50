"""Streaming per hop on a real stack: the dashboard made to hold the stream once per message
(DASHBOARD_RELAY_STALL_MS) is named by the audit (`--json` and table), `trace show` and the
flow view as the hop that held the tokens, for about the injected time; OMNI2's own gaps (its
offline model's pause between tokens) do not show it. Without the knob no hop is named."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from omni_trace.cli import main
from omni_trace.stack import Stack
from omni_trace.stack.client import login, open_chat
from omni_trace.stack.ports import Ports
from omni_trace.stack.settings import StackSettings
from omni_trace.traces import JaegerClient, wait_for_chain
from tests.whole_stack.conftest import client_provider
from tests.whole_stack.polling import until

pytestmark = [pytest.mark.stack, pytest.mark.slow]

STALL_MS = 400
TOKEN_DELAY_MS = 20  # OMNI2's offline model pauses this long between tokens


@pytest.fixture(scope="module")
def stalling_stack(tmp_path_factory: pytest.TempPathFactory, jwt_secret: str) -> Iterator[Stack]:
    stack = Stack(
        tmp_path_factory.mktemp("stall"),
        Ports.free(),
        StackSettings(model_token_delay_ms=TOKEN_DELAY_MS),
        jwt_secret=jwt_secret,
        service_env={
            "dashboard": {
                "DASHBOARD_RELAY_STALL_MS": str(STALL_MS),
                "DASHBOARD_RELAY_STALL_AFTER_TOKENS": "3",
            }
        },
        progress=lambda message: print(message, flush=True),
    )
    with stack:
        yield stack


async def _message(stack: Stack) -> tuple[str, str]:
    """One message tagged with a unique id, its chain whole in Jaeger: (conversation, trace)."""
    info = stack.info
    with client_provider(stack) as provider:
        token = await login(info.dashboard_url, "alice", "alice-demo")
        async with open_chat(info.dashboard_ws_url, token, tracer_provider=provider) as chat:
            reply = await chat.send(f"tell me a story {uuid.uuid4().hex}")
        provider.force_flush(5000)
    assert reply.ok, reply.frame
    with JaegerClient(info.jaeger_query_url) as jaeger:
        report = wait_for_chain(jaeger, reply.trace_id)
    assert report.whole, report.problems
    assert chat.conversation_id
    return chat.conversation_id, reply.trace_id


def _audit(stack: Stack, conversation: str, capsys: pytest.CaptureFixture[str], *extra: str) -> str:
    args = ["audit", "--conversation", conversation, "--settle", "3s"]
    assert main([*args, "--jaeger", stack.info.jaeger_query_url, *extra]) == 0
    return capsys.readouterr().out


async def test_the_dashboard_made_to_stall_is_named_everywhere(
    stalling_stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    stack = stalling_stack
    conversation, trace_id = await _message(stack)

    (message,) = json.loads(_audit(stack, conversation, capsys, "--json"))["messages"]
    assert message["trace_id"] == trace_id
    streams, stall = message["streams"], message["stall"]
    assert set(streams) == {"client", "dashboard", "omni2"}, streams
    assert streams["client"]["public"] and not streams["dashboard"]["public"]
    # OMNI2 streamed at its model's pace; the dashboard's longest gap is the injected hold.
    assert streams["omni2"]["max_ms"] < STALL_MS / 2, streams
    assert STALL_MS <= streams["dashboard"]["max_ms"] < STALL_MS * 1.5, streams
    assert stall is not None, message
    assert (stall["layer"], stall["below"]) == ("dashboard", "omni2")
    assert STALL_MS * 0.8 <= stall["added_ms"] <= STALL_MS * 1.25, stall
    # It began at the third token frame: after the first token, within the message.
    assert message["hops_ms"]["ttft_dashboard"] < stall["at_ms"] < message["hops_ms"]["total"]
    assert stall["description"].startswith("the dashboard held tokens for ")

    table = _audit(stack, conversation, capsys)
    assert f"d +{stall['added_ms']:.0f}@" in table, table
    assert stall["description"] in table, table

    assert main(["trace", "show", trace_id, "--jaeger", stack.info.jaeger_query_url]) == 0
    shown = capsys.readouterr().out
    assert f"stall: {stall['description']}" in shown, shown
    assert "(the client's word)" in shown

    url = f"{stack.info.flowview_url}/api/traces/{trace_id}"

    def chain() -> dict[str, Any] | None:
        found = httpx.get(url, timeout=30).json().get("chain")
        return found if found and found.get("stall") else None

    page = until("the flow view's chain report of the message names a stall", chain)
    assert page["stall"]["layer"] == "dashboard"
    assert page["stall"]["added_ms"] == pytest.approx(stall["added_ms"])
    assert set(page["streams"]) == set(streams)


async def test_without_the_knob_no_hop_is_named(
    stalling_stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    stack = stalling_stack
    stack.restart_service("dashboard", {"DASHBOARD_RELAY_STALL_MS": "0"})
    capsys.readouterr()  # the restart's progress lines
    conversation, _ = await _message(stack)
    (message,) = json.loads(_audit(stack, conversation, capsys, "--json"))["messages"]
    assert {"dashboard", "omni2"} <= set(message["streams"]), message
    assert message["stall"] is None, message["streams"]
    assert message["streams"]["dashboard"]["max_ms"] < STALL_MS / 2
    assert "stalled streams:" not in _audit(stack, conversation, capsys)
