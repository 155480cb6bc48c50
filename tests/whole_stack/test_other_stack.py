"""The toolkit on a stack of other names: the real stack started with its services and
message spans renamed through settings, as another team's stack would name them, read by
`omni-trace audit --spec --jaeger`, `omni-trace doctor --spec --jaeger` and the pytest plugin
with a matching spec; a mismatched spec names the missing layer. The doctor and the plugin
run from a fresh virtualenv with the project installed without its `stack` extra, as a user
of another stack installs it."""

from __future__ import annotations

import asyncio
import json
import secrets
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from omni_trace.stack import Stack
from omni_trace.stack.client import ChatReply, login, open_chat
from omni_trace.traces.jaeger import JaegerClient, has_services
from otel.setup import create_tracer_provider
from tests.whole_stack.conftest import running_stack

pytestmark = [pytest.mark.stack, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]

SPEC: dict[str, Any] = {
    "name": "acme-chat",
    "conversation_attribute": "gen_ai.conversation.id",
    "user_attribute": "user.id",
    "link_role_attribute": "chat.link.role",
    "first_token_event": "first_token",
    "layers": [
        {"name": "web", "services": ["acme-web"], "message": "send"},
        {
            "name": "proxy",
            "services": ["acme-ws-proxy"],
            "message": "proxy.message",
            "parent": "web",
            "links": [{"role": "upstream-connect", "span": "upstream connect"}],
        },
        {"name": "gateway", "services": ["traefik"]},
        {
            "name": "backend",
            "services": ["acme-llm"],
            "message": "answer",
            "parent": "proxy",
            "links": [{"role": "gateway", "layer": "gateway"}],
        },
    ],
    "model_spans": {"services": ["acme-llm"], "name": "chat *"},
}


@pytest.fixture(scope="module")
def acme(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    env = {
        "dashboard": {
            "OTEL_SERVICE_NAME": "acme-ws-proxy",
            "DASHBOARD_RELAY_SPAN_NAME": "proxy.message",
        },
        "omni2": {"OTEL_SERVICE_NAME": "acme-llm", "OMNI2_TURN_SPAN_NAME": "answer"},
    }
    run_dir = tmp_path_factory.mktemp("acme")
    # Its browser layer calls itself acme-web: the public OTLP path must take that name.
    with running_stack(
        run_dir, secrets.token_urlsafe(32), service_env=env, public_trace_services=["acme-web"]
    ) as stack:
        yield stack


@pytest.fixture(scope="module")
def conversation(acme: Stack) -> tuple[str, list[ChatReply]]:
    """Two messages (one with a tool call) from a client that calls itself acme-web."""
    provider = create_tracer_provider("acme-web", otlp_endpoint=acme.info.otlp_http_endpoint)

    async def chat() -> tuple[str, list[ChatReply]]:
        token = await login(acme.info.dashboard_url, "alice", "alice-demo")
        async with open_chat(
            acme.info.dashboard_ws_url, token, tracer_provider=provider, message_span_name="send"
        ) as connection:
            replies = [
                await connection.send("Hello from another stack"),
                await connection.send("How many products per category are in the database?"),
            ]
        assert connection.conversation_id and all(r.ok for r in replies)
        return connection.conversation_id, replies

    try:
        found = asyncio.run(chat())
    finally:
        provider.shutdown()
    with JaegerClient(acme.info.jaeger_query_url) as jaeger:
        for reply in found[1]:
            jaeger.wait_for_trace(
                reply.trace_id,
                has_services("acme-web", "acme-ws-proxy", "acme-llm"),
                what="3 layers",
            )
    return found


@pytest.fixture(scope="module")
def toolkit(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new virtualenv with `pip install <project>` (no extras) and pytest: its bin/."""
    root = tmp_path_factory.mktemp("toolkit")
    source = root / "source"
    for package in ("omni_trace", "otel", "services"):
        shutil.copytree(
            ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pytest_pin = next(
        d for d in project["optional-dependencies"]["dev"] if d.startswith("pytest==")
    )
    subprocess.run([sys.executable, "-m", "venv", str(root / "venv")], check=True)
    bin_dir = root / "venv" / "bin"
    install = [str(bin_dir / "python"), "-m", "pip", "install", "--quiet"]
    install += ["--disable-pip-version-check", str(source), pytest_pin]
    run = subprocess.run(install, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout + run.stderr
    return bin_dir


def test_the_toolkit_installs_without_the_stacks_packages(toolkit: Path) -> None:
    for module in ("fastapi", "sqlalchemy", "anthropic", "mcp", "uvicorn"):
        run = subprocess.run([str(toolkit / "python"), "-c", f"import {module}"], check=False)
        assert run.returncode == 1, f"{module} came with the toolkit"
    run = subprocess.run(
        [str(toolkit / "omni-trace"), "up"], capture_output=True, text=True, check=False
    )
    assert run.returncode == 2 and "pip install 'omni-trace[stack]'" in run.stderr


def _doctor(
    toolkit: Path, acme: Stack, spec: Path, conversation_id: str
) -> subprocess.CompletedProcess[str]:
    argv = [str(toolkit / "omni-trace"), "doctor", "--jaeger", acme.info.jaeger_query_url]
    argv += ["--spec", str(spec), "--conversation", conversation_id]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=spec.parent)


def test_the_doctor_reads_another_stacks_traces_by_its_spec(
    toolkit: Path, acme: Stack, conversation: tuple[str, list[ChatReply]], tmp_path: Path
) -> None:
    conversation_id, replies = conversation
    spec = tmp_path / "acme.yaml"
    spec.write_text(yaml.safe_dump(SPEC))
    run = _doctor(toolkit, acme, spec, conversation_id)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "2 message(s) of conversation" in run.stdout
    assert "by the acme-chat spec: 2 whole and answered, 0 broken chain(s), 0 failed" in run.stdout
    assert "every chain is whole and every message was answered" in run.stdout

    wrong = json.loads(json.dumps(SPEC))
    wrong["layers"][3]["message"] = "respond"  # the backend's span is called "answer"
    spec.write_text(yaml.safe_dump(wrong))
    run = _doctor(toolkit, acme, spec, conversation_id)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "2 x chain breaks at proxy -> backend: no respond span from acme-llm" in run.stdout
    for reply in replies:
        assert f"trace {reply.trace_id}  conversation {conversation_id}  " in run.stdout
    # The gateway is proven by the backend's link, and the backend's span was not found.
    assert "layers reached: web, proxy\n" in run.stdout


def _audit(
    acme: Stack, spec: Path | None, conversation_id: str
) -> subprocess.CompletedProcess[str]:
    """`omni-trace audit` as a user of another stack runs it: their Jaeger, their spec."""
    argv = [sys.executable, "-m", "omni_trace.cli", "audit", "--jaeger", acme.info.jaeger_query_url]
    argv += ["--conversation", conversation_id, "--json", "--settle", "15"]
    argv += ["--spec", str(spec)] if spec else []
    # No stack file: nothing of our stack is read.
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=120, cwd=spec.parent if spec else None
    )


def test_audit_by_a_matching_spec_finds_every_chain_whole(
    acme: Stack, conversation: tuple[str, list[ChatReply]], tmp_path: Path
) -> None:
    conversation_id, replies = conversation
    spec = tmp_path / "acme.yaml"
    spec.write_text(yaml.safe_dump(SPEC))
    run = _audit(acme, spec, conversation_id)
    assert run.returncode == 0, run.stdout + run.stderr
    found = json.loads(run.stdout)
    assert [m["trace_id"] for m in found["messages"]] == [r.trace_id for r in replies]
    for message in found["messages"]:
        assert message["layers"] == {"web": True, "proxy": True, "gateway": True, "backend": True}
        assert message["problems"] == []
        hops = message["hops_ms"]
        assert set(hops) == {
            "web_to_proxy",
            "proxy_to_backend",
            "ttft_web",
            "ttft_proxy",
            "ttft_backend",
            "model",
            "tools",
            "total",
        }
        assert all(hops[h] is not None and hops[h] >= 0 for h in hops if h != "tools")
    assert found["messages"][1]["hops_ms"]["tools"] > 0  # the tool call's message

    # The table says the spec's layers.
    table = subprocess.run(
        [sys.executable, "-m", "omni_trace.cli", "audit", "--jaeger", acme.info.jaeger_query_url,
         "--conversation", conversation_id, "--spec", str(spec)],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert table.returncode == 0, table.stderr
    assert "w>p" in table.stdout and "WPGB" in table.stdout
    assert "layers (acme-chat): W web, P proxy, G gateway, B backend" in table.stdout


def test_a_mismatched_spec_names_the_missing_layer(
    acme: Stack, conversation: tuple[str, list[ChatReply]], tmp_path: Path
) -> None:
    conversation_id, _ = conversation
    wrong = json.loads(json.dumps(SPEC))
    wrong["layers"][3]["message"] = "respond"  # the backend's span is called "answer"
    spec = tmp_path / "wrong.yaml"
    spec.write_text(yaml.safe_dump(wrong))
    run = _audit(acme, spec, conversation_id)
    assert run.returncode == 1
    messages = json.loads(run.stdout)["messages"]
    assert messages and all("missing layer backend" in m["problems"] for m in messages)
    # Read by our own spec, that stack holds no message of ours at all.
    ours = _audit(acme, None, conversation_id)
    assert ours.returncode == 1 and json.loads(ours.stdout)["messages"] == []
    # A spec that cannot be used is said so, plainly.
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nlayers: []\n")
    refused = _audit(acme, bad, conversation_id)
    assert refused.returncode == 2 and "at least one layer" in refused.stderr


PLUGIN_TEST = """
from omni_trace.traces import assert_message_chain


def test_each_message_chain_is_whole(omni_traces, omni_spec):
    assert omni_spec.name == "acme-chat"
    for trace_id in {trace_ids!r}:
        message, session = omni_traces.message(trace_id)
        assert_message_chain(message, session, omni_spec)
        message.assert_chain("acme-web:send > acme-ws-proxy:proxy.message > acme-llm:answer")
        message.assert_linked("acme-llm:answer", session, "traefik:ReverseProxy")
"""


def test_the_pytest_plugin_asserts_on_another_stack(
    toolkit: Path, acme: Stack, conversation: tuple[str, list[ChatReply]], tmp_path: Path
) -> None:
    """A user's own test file, run with the plugin (from the toolkit's install) against
    their Jaeger and spec."""
    _, replies = conversation
    spec = tmp_path / "acme.yaml"
    spec.write_text(yaml.safe_dump(SPEC))
    test_file = tmp_path / "test_acme.py"
    test_file.write_text(PLUGIN_TEST.format(trace_ids=[r.trace_id for r in replies]))
    argv = [str(toolkit / "pytest"), str(test_file), "-q", "-p", "no:cacheprovider"]
    argv += ["--omni-jaeger", acme.info.jaeger_query_url, "--omni-spec", str(spec)]
    run = subprocess.run(argv, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "1 passed" in run.stdout
