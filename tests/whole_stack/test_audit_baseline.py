"""`omni-trace audit --save-baseline` / `--baseline` on a real stack: a run whose model hop got
slower (OMNI2's offline model pausing longer between tokens) fails against the baseline of
the same stack before, naming that hop; the same traffic against its own baseline passes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from omni_trace.cli import main
from omni_trace.stack import Stack
from omni_trace.stack.client import login, open_chat
from omni_trace.traces import JaegerClient, wait_for_chain
from tests.whole_stack.conftest import client_provider, running_stack

pytestmark = [pytest.mark.stack, pytest.mark.slow]

MESSAGES = 4


@pytest.fixture(scope="module")
def own_stack(tmp_path_factory: pytest.TempPathFactory, jwt_secret: str) -> Iterator[Stack]:
    # running_stack's offline model pauses 2 ms between tokens.
    with running_stack(tmp_path_factory.mktemp("baseline"), jwt_secret) as stack:
        yield stack


async def _conversation(stack: Stack, tag: str) -> str:
    """MESSAGES tool-free messages on one connection, their chains whole in Jaeger."""
    info = stack.info
    with client_provider(stack) as provider:
        token = await login(info.dashboard_url, "alice", "alice-demo")
        async with open_chat(info.dashboard_ws_url, token, tracer_provider=provider) as chat:
            replies = [await chat.send(f"baseline {tag} {i}") for i in range(MESSAGES)]
        provider.force_flush(5000)
    assert all(r.ok for r in replies), [r.frame for r in replies]
    with JaegerClient(info.jaeger_query_url) as jaeger:
        for reply in replies:
            report = wait_for_chain(jaeger, reply.trace_id)
            assert report.whole, report.problems
    assert chat.conversation_id
    return chat.conversation_id


def _audit(stack: Stack, conversation: str, *extra: str) -> int:
    args = ["audit", "--conversation", conversation, "--settle", "3s"]
    return main([*args, "--jaeger", stack.info.jaeger_query_url, *extra])


async def test_a_slower_hop_fails_against_the_baseline(
    own_stack: Stack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = await _conversation(own_stack, "before")
    baseline = tmp_path / "baseline.json"
    assert _audit(own_stack, before, "--save-baseline", str(baseline)) == 0
    capsys.readouterr()
    saved = json.loads(baseline.read_text())
    assert saved["hops_ms"]["model"]["count"] == MESSAGES
    assert saved["source"]["query"] == f"conversation {before}"
    assert saved["source"]["jaeger"] == own_stack.info.jaeger_query_url

    # The same traffic against its own baseline: nothing regressed.
    assert _audit(own_stack, before, "--baseline", str(baseline)) == 0
    assert "no hop regressed" in capsys.readouterr().out

    # OMNI2's model now pauses 40 ms between tokens instead of 2: the model hop (and what
    # contains it) is slower, measurably and honestly.
    own_stack.restart_service("omni2", {"OMNI2_MODEL_TOKEN_DELAY_MS": "40"})
    after = await _conversation(own_stack, "after")
    assert _audit(own_stack, after, "--baseline", str(baseline)) == 1
    captured = capsys.readouterr()
    assert "REGRESSED: hop model regressed: p50" in captured.out
    assert "omni-trace: hop model regressed" in captured.err
    # Connection hops did not slow down by the model's pause: not named.
    assert "hop client_to_dashboard regressed" not in captured.out

    assert _audit(own_stack, after, "--baseline", str(baseline), "--json") == 1
    comparison = json.loads(capsys.readouterr().out)["baseline_comparison"]
    regressed = {r["hop"] for r in comparison["regressions"]}
    assert "model" in regressed and "total" in regressed
    model = next(r for r in comparison["regressions"] if r["hop"] == "model")
    assert model["now_ms"] > model["baseline_ms"] * 1.25
    # A generous tolerance lets the same run pass.
    assert _audit(own_stack, after, "--baseline", str(baseline), "--tolerance", "1000") == 0
