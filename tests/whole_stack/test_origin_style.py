"""A stack written the origin project's way, traced by one instrumentation call per service.

`tests/whole_stack/origin/` holds a proxy (accept, `websockets.connect` with the bearer token, two
forwarding loops), a backend (a welcome, `token` frames, `done`) and a ForwardAuth, with no
tracing code in any handler. They run as processes behind the real Traefik of a stack whose
Traefik is pointed at them, export to its Jaeger, and a traced chat client talks to the
proxy. The default spec's audit must find every message whole across client, proxy, Traefik
and backend, with first-token hops; then the same with another frame protocol, through its
codec and a spec of its own."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

import pytest
import websockets

from omni_trace.stack import Stack
from omni_trace.stack.client import open_chat
from omni_trace.stack.ports import free_port
from omni_trace.traces import (
    JaegerClient,
    default_spec,
    parse_spec,
    render_tree,
    wait_for_chain,
)
from otel.names import Attr, Service
from services.common.tokens import issue_token
from tests.whole_stack.conftest import client_provider, running_stack

pytestmark = [pytest.mark.stack, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


@contextmanager
def _serve(app: str, port: int, env: dict[str, str]) -> Iterator[None]:
    """One origin-style service under uvicorn, until the block ends."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            *app.split(),
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env={"PATH": os.environ["PATH"], "OTEL_BSP_SCHEDULE_DELAY": "100", **env},
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, f"{app} exited with {process.returncode}"
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert time.monotonic() < deadline, f"{app} did not listen on {port}"
            time.sleep(0.1)
        yield
    finally:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:  # uvicorn waits for open WebSockets: not for ours
            process.kill()
            process.wait(5)


@contextmanager
def origin_stack(tmp: Path, protocol: str, names: dict[str, str]) -> Iterator[tuple[Stack, str]]:
    """The stack's Jaeger and Traefik in front of the origin-style services; the proxy's URL."""
    secret = secrets.token_urlsafe(32)
    auth, backend, proxy = free_port(), free_port(), free_port()
    traefik = {
        "OMNI2_AUTH_VERIFY_URL": f"http://127.0.0.1:{auth}/verify",
        "OMNI2_BACKEND_URLS": f"http://127.0.0.1:{backend}",
    }
    with (
        _serve("tests.whole_stack.origin.auth:app", auth, {"OMNI_JWT_SECRET": secret}),
        running_stack(tmp, secret, service_env={"traefik": traefik}, viewers=False) as stack,
    ):
        traced = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": stack.info.otlp_internal_endpoint,
            "OTEL_EXPORTER_OTLP_HEADERS": f"Authorization={quote(stack.otlp_authorization)}",
            "ORIGIN_PROTOCOL": protocol,
        }
        backend_env = traced | {"OTEL_SERVICE_NAME": names["backend"]}
        proxy_env = traced | {
            "OTEL_SERVICE_NAME": names["proxy"],
            "ORIGIN_UPSTREAM_WS_URL": stack.info.traefik_ws_url,
        }
        with (
            _serve("--factory tests.whole_stack.origin.backend:serve", backend, backend_env),
            _serve("--factory tests.whole_stack.origin.proxy:serve", proxy, proxy_env),
        ):
            yield stack, f"ws://127.0.0.1:{proxy}/ws/chat"


@pytest.fixture(scope="module")
def omni2_style(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, str]]:
    names = {"proxy": Service.DASHBOARD, "backend": Service.OMNI2}
    with origin_stack(tmp_path_factory.mktemp("origin"), "omni2", names) as started:
        yield started


async def test_every_message_is_whole_across_client_proxy_traefik_and_backend(
    omni2_style: tuple[Stack, str],
) -> None:
    stack, url = omni2_style
    token = issue_token(f"origin-{secrets.token_hex(4)}", stack.jwt_secret)
    with client_provider(stack) as provider:
        async with open_chat(url, token, tracer_provider=provider) as chat:
            replies = [await chat.send(text) for text in ("hello there", "and again")]
        provider.force_flush()
    assert all(r.ok for r in replies), [r.frame for r in replies]
    spec = default_spec()
    with JaegerClient(stack.info.jaeger_query_url) as jaeger:
        for reply in replies:
            trace_id = str(reply.frame["trace_id"])
            report = wait_for_chain(jaeger, trace_id, timeout=20, spec=spec)
            spans = jaeger.get_trace(trace_id)
            assert report.whole, f"{report.status}\n{render_tree(spans)}"
            assert report.layer_states == dict.fromkeys(report.layers, "present"), report
            for layer in ("client", "dashboard", "omni2"):
                assert report.hops[f"ttft_{layer}"] is not None, (layer, report.hops)
            assert report.hops["dashboard_to_omni2"] is not None
            assert report.conversation_id == chat.conversation_id


async def test_another_protocol_through_its_codec_and_spec(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    names = {"proxy": "acme-ws-proxy", "backend": "acme-llm"}
    spec = parse_spec(
        {
            "name": "acme",
            "conversation_attribute": Attr.CONVERSATION_ID,
            "user_attribute": Attr.USER_ID,
            "link_role_attribute": Attr.LINK_ROLE,
            "first_token_event": "first_token",
            "layers": [
                {"name": "proxy", "services": ["acme-ws-proxy"], "message": "acme.message"},
                {"name": "gateway", "services": ["traefik"]},
                {
                    "name": "backend",
                    "services": ["acme-llm"],
                    "message": "acme.message",
                    "parent": "proxy",
                    "links": [{"role": "gateway", "layer": "gateway"}],
                },
            ],
        }
    )
    with origin_stack(tmp_path_factory.mktemp("acme"), "acme", names) as (stack, url):
        token = issue_token("acme-user", stack.jwt_secret)
        ends = await _acme_chat(f"{url}?token={token}", ["what is new", "tell me more"])
        with JaegerClient(stack.info.jaeger_query_url) as jaeger:
            for end in ends:
                trace_id = str(end["meta"]["trace_id"])  # type: ignore[index]
                report = wait_for_chain(jaeger, trace_id, timeout=20, spec=spec)
                spans = jaeger.get_trace(trace_id)
                assert report.whole, f"{report.status}\n{render_tree(spans)}"
                assert report.layers == {"proxy": True, "gateway": True, "backend": True}
                assert report.hops["ttft_proxy"] is not None
                assert report.hops["ttft_backend"] is not None


async def _acme_chat(url: str, questions: list[str]) -> list[dict[str, object]]:
    """The other team's client: no tracing of its own, its frames in its own shape."""
    ends = []
    async with websockets.connect(url) as ws:
        json.loads(await ws.recv())  # hello
        for question in questions:
            await ws.send(json.dumps({"op": "ask", "q": question}))
            while (frame := json.loads(await asyncio.wait_for(ws.recv(), 10)))["op"] == "chunk":
                pass
            assert frame["op"] == "end", frame
            ends.append(frame)
    return ends
