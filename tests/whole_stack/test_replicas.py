"""Two OMNI2 replicas behind Traefik's load balancer, on the runner's PostgreSQL: connections
spread over both, every chain stays whole and names its replica, one user's connection limit
holds across them, and when a replica dies new connections land on the other."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider

from omni_trace.doctor.probe import diagnose
from omni_trace.stack import Stack
from omni_trace.stack.client import ChatRefused, open_chat
from omni_trace.traces import TraceFetcher, assert_message_chain
from otel.names import Service, SpanName
from services.common.protocol import CloseCode
from services.common.tokens import issue_token
from tests.db import Admin
from tests.whole_stack.conftest import new_user, running_stack

pytestmark = [pytest.mark.stack, pytest.mark.slow]

SECRET = secrets.token_urlsafe(32)


@pytest.fixture(scope="module")
def own_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    run_dir = tmp_path_factory.mktemp("replicas")
    with running_stack(
        run_dir, SECRET, viewers=False, omni2_replicas=2, database="postgres"
    ) as stack:
        yield stack


def _user(stack: Stack, **limits: int) -> str:
    return new_user(Admin(stack.info.omni2_database_url), **limits)


def _replica_of(traces: TraceFetcher, trace_id: str) -> str:
    message, _ = traces.message(trace_id, connection_closed=False)
    turn = message.one(f"{Service.OMNI2}:{SpanName.TURN}")
    return str(turn.resource.get("service.instance.id"))


async def test_connections_spread_over_both_and_every_chain_is_whole(
    own_stack: Stack, provider: TracerProvider, traces: TraceFetcher
) -> None:
    assert len(own_stack.info.omni2_replicas) == 2
    token = issue_token(_user(own_stack), SECRET)
    replies = []
    for i in range(4):  # one after another: Traefik's round robin alternates
        async with open_chat(own_stack.info.dashboard_ws_url, token, tracer_provider=provider) as c:
            replies.append(await c.send(f"hello replica {i}"))
    assert all(r.ok for r in replies), [r.frame for r in replies]
    seen = set()
    for reply in replies:
        message, session = traces.message(reply, timeout=30)
        assert_message_chain(message, session)
        seen.add(_replica_of(traces, reply.trace_id))
    assert seen == {"omni2", "omni2-2"}


def test_the_doctor_checks_each_replica(own_stack: Stack) -> None:
    result = diagnose(own_stack.info, user="alice", password=own_stack.info.demo_passwords["alice"])
    assert {c.name: c.ok for c in result.checks}.get("omni2 replica 2") is True, result.render()
    assert result.healthy, result.render()


async def test_one_users_connection_limit_holds_across_replicas(
    own_stack: Stack, provider: TracerProvider
) -> None:
    token = issue_token(_user(own_stack, max_connections=2), SECRET)
    url = own_stack.info.dashboard_ws_url
    async with contextlib.AsyncExitStack() as held:
        for _ in range(2):  # round robin: one on each replica
            await held.enter_async_context(open_chat(url, token, tracer_provider=provider))
        for _ in range(2):  # whichever replica it reaches, the third is refused
            with pytest.raises(ChatRefused) as refused:
                async with open_chat(url, token, tracer_provider=provider):
                    pass
            assert refused.value.code == CloseCode.TOO_MANY_CONNECTIONS


async def test_a_dead_replica_gets_no_new_connections(
    own_stack: Stack, provider: TracerProvider, traces: TraceFetcher
) -> None:
    token = issue_token(_user(own_stack), SECRET)
    own_stack.kill_service("omni2-2")
    try:
        # Until Traefik's health check (every 2 s) takes it out, a connection may still be
        # sent to the dead replica: it is refused with a reason, and the next one goes through.
        deadline = time.monotonic() + 15
        answered = []
        while len(answered) < 4:
            assert time.monotonic() < deadline, f"only {len(answered)} answered"
            try:
                async with open_chat(
                    own_stack.info.dashboard_ws_url, token, tracer_provider=provider
                ) as chat:
                    answered.append(await chat.send("are you there?"))
            except ChatRefused as refused:
                assert refused.code == CloseCode.GATEWAY_UNREACHABLE, refused
                answered.clear()  # count only connections after the last refusal
                await asyncio.sleep(0.5)
        assert all(r.ok for r in answered)
        assert {_replica_of(traces, r.trace_id) for r in answered} == {"omni2"}
    finally:
        own_stack.start_service("omni2-2")
