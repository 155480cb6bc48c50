"""Dead dependencies: chat survives a dead Jaeger; a dead backend or gateway gets a reason.

Runs its own stack, since it stops services.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from websockets.exceptions import ConnectionClosed

from omni_trace.client import ChatRefused, login, open_chat
from omni_trace.stack import Stack
from services.common.protocol import CloseCode
from tests.stack.conftest import running_stack

pytestmark = pytest.mark.stack


@pytest.fixture(scope="module")
def own_stack(tmp_path_factory: pytest.TempPathFactory, jwt_secret: str) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("degraded"), jwt_secret) as stack:
        yield stack


async def test_chat_works_with_jaeger_stopped(own_stack: Stack) -> None:
    own_stack.stop_service("jaeger")
    started = time.monotonic()
    token = await login(own_stack.info.dashboard_url, "alice", "alice-demo")
    async with open_chat(own_stack.info.dashboard_ws_url, token) as chat:
        for text in ("is anyone tracing?", "second message"):
            reply = await chat.send(text)
            assert reply.ok, reply.frame
            assert reply.text
    assert time.monotonic() - started < 5, "a dead Jaeger must not slow the chat down"


async def test_backend_going_away_closes_the_client_with_its_code(own_stack: Stack) -> None:
    token = await login(own_stack.info.dashboard_url, "alice", "alice-demo")
    async with open_chat(own_stack.info.dashboard_ws_url, token) as chat:
        own_stack.stop_service("omni2")
        with pytest.raises(ConnectionClosed) as closed:
            await chat.connection.recv()
    rcvd = closed.value.rcvd
    assert rcvd is not None
    # uvicorn closes its sockets with 1012 (service restart); Traefik and the dashboard pass
    # the backend's code on instead of inventing one.
    assert rcvd.code == 1012, rcvd
    own_stack.start_service("omni2")
    async with open_chat(own_stack.info.dashboard_ws_url, token) as chat:
        assert (await chat.send("back again?")).ok


async def test_unreachable_gateway_gets_a_clear_reason(own_stack: Stack) -> None:
    token = await login(own_stack.info.dashboard_url, "alice", "alice-demo")
    own_stack.stop_service("traefik")
    with pytest.raises(ChatRefused) as refused:
        async with open_chat(own_stack.info.dashboard_ws_url, token):
            pass
    assert refused.value.code == CloseCode.GATEWAY_UNREACHABLE
    assert "unreachable" in refused.value.reason
