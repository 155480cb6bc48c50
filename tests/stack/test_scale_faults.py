"""Faults of the scale-out profile, each on the real parts: an OMNI2 replica killed mid-answer,
the Kafka broker restarted, an ingester killed. The chat goes on or fails with a reason, and
no span that was accepted is lost. (A dead collector and a dead dashboard replica are in
test_scale_profile.py.)

Runs its own stack, since it kills services; each test brings back what it killed."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from omni_trace.stack import Stack
from omni_trace.stack.client import ChatReply, open_chat
from omni_trace.traces import (
    AuditQuery,
    JaegerClient,
    Trace,
    TraceFetcher,
    assert_message_chain,
    run_audit,
)
from otel.names import Service, SpanName
from services.common.protocol import CloseCode
from services.common.tokens import issue_token
from services.omni2.db.models import ConnectionSlot
from tests.db import Admin
from tests.stack.conftest import client_provider, new_user, running_stack

pytestmark = pytest.mark.stack

SECRET = secrets.token_urlsafe(32)
# Slow enough that a replica can be killed while it streams an answer (about 20 tokens).
SLOW_MODEL = {"OMNI2_MODEL_TOKEN_DELAY_MS": "60"}


@pytest.fixture(scope="module")
def scale(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(
        tmp_path_factory.mktemp("scale-faults"),
        SECRET,
        service_env={"omni2": SLOW_MODEL, "omni2-2": SLOW_MODEL},
        viewers=False,
        scale=True,
    ) as stack:
        yield stack


@pytest.fixture(scope="module")
def provider(scale: Stack) -> Iterator[TracerProvider]:
    with client_provider(scale) as provider:
        yield provider


@pytest.fixture(scope="module")
def jaeger(scale: Stack) -> Iterator[JaegerClient]:
    with JaegerClient(scale.info.jaeger_query_url) as client:
        yield client


@pytest.fixture(scope="module")
def traces(jaeger: JaegerClient, provider: TracerProvider) -> TraceFetcher:
    return TraceFetcher(jaeger, provider)


def _token(stack: Stack) -> tuple[str, str]:
    user = new_user(Admin(stack.info.omni2_database_url))
    return user, issue_token(user, SECRET)


def _replica_holding(stack: Stack, user: str) -> str:
    """The OMNI2 replica that holds the user's one open connection (its shared slot)."""

    async def replicas(session: AsyncSession) -> list[str]:
        found = await session.scalars(
            select(ConnectionSlot.replica).where(ConnectionSlot.user_id == user)
        )
        return list(found)

    (replica,) = Admin(stack.info.omni2_database_url)(replicas)
    return replica


def _instance(trace: Trace) -> str:
    turn = trace.one(f"{Service.OMNI2}:{SpanName.TURN}")
    return str(turn.resource.get("service.instance.id"))


async def _messages(stack: Stack, provider: TracerProvider, n: int, tag: str) -> list[Any]:
    """`n` messages, each on a connection of its own: (reply, conversation id) pairs."""
    _, token = _token(stack)
    sent = []
    for i in range(n):
        async with open_chat(stack.info.dashboard_ws_url, token, tracer_provider=provider) as c:
            sent.append((await c.send(f"{tag} {i}"), str(c.conversation_id)))
    assert all(reply.ok for reply, _ in sent), [reply.frame for reply, _ in sent]
    return sent


async def test_a_replica_killed_mid_answer(
    scale: Stack, provider: TracerProvider, traces: TraceFetcher, jaeger: JaegerClient
) -> None:
    user, token = _token(scale)
    url = scale.info.dashboard_ws_url
    async with open_chat(url, token, tracer_provider=provider) as chat:
        before = await chat.send("answered before the fault")
        replica = _replica_holding(scale, user)
        # A process killed loses the spans it has not exported yet (up to the batch delay,
        # OTEL_BSP_SCHEDULE_DELAY, 200 ms here): the answer before the fault is in Jaeger first.
        message, session = traces.message(before, timeout=60, connection_closed=False)
        assert_message_chain(message, session)
        killed_at: list[float] = []

        def kill_on_first_token(_: str) -> None:
            if not killed_at:
                scale.kill_service(replica)
                killed_at.append(time.monotonic())

        cut = await chat.send("this answer is cut off", on_token=kill_on_first_token)
        closed_at = time.monotonic()
        code, reason = chat.connection.close_code, chat.connection.close_reason
    try:
        assert before.ok and killed_at, before.frame
        # The client learns it at once, with the gateway's code and a reason.
        assert cut.frame["type"] == "error" and not cut.ok, cut.frame
        assert code == CloseCode.GATEWAY_UNREACHABLE and reason, (code, reason)
        assert closed_at - killed_at[0] < 2.0
        # Reconnecting lands on the other replica at once (Traefik retries a dead one).
        async with open_chat(url, token, tracer_provider=provider) as chat:
            after = await chat.send("answered after the fault")
            conversation = str(chat.conversation_id)
        assert after.ok, after.frame
        message, session = traces.message(after, timeout=60)
        assert_message_chain(message, session)
        survivor = _instance(message)
        assert survivor != replica and survivor in {"omni2", "omni2-2"}
        (report,) = run_audit(jaeger, AuditQuery(conversation_id=conversation), settle_s=5)
        assert report.trace_id == after.trace_id and not report.broken, report.status
        # The cut message: the killed replica never exported its turn, and the audit says
        # so, at the hop it broke, instead of calling it whole.
        cut_trace = traces.wait(
            cut.trace_id,
            lambda spans: any(s.name == SpanName.RELAY and s.end_ns for s in spans),
            what="the dashboard's relay span of the cut message",
            timeout=60,
        )
        relay = cut_trace.one(f"{Service.DASHBOARD}:{SpanName.RELAY}")
        cut_trace.expect(relay.status == "ERROR", "the relay span records the lost answer")
    finally:
        scale.start_service(replica)


async def _all_whole(traces: TraceFetcher, replies: list[ChatReply], timeout: float) -> None:
    for reply in replies:
        message, session = traces.message(reply, timeout=timeout)
        assert_message_chain(message, session)


async def test_the_broker_restarted_loses_no_span(
    scale: Stack, provider: TracerProvider, traces: TraceFetcher
) -> None:
    scale.stop_service("kafka")
    try:
        # The chat does not depend on the trace pipeline: answered while the broker is away.
        started = time.monotonic()
        during = await _messages(scale, provider, 4, "while the broker is away")
        assert time.monotonic() - started < 20, "a dead broker must not slow the chat"
        provider.force_flush()
        await asyncio.sleep(2)  # the collectors hold the spans they could not send
    finally:
        scale.start_service("kafka")
    # Counted: every message answered meanwhile reaches Jaeger whole once the broker is back.
    await _all_whole(traces, [reply for reply, _ in during], timeout=120)


async def test_an_ingester_killed_hands_its_partitions_over(
    scale: Stack, provider: TracerProvider, traces: TraceFetcher
) -> None:
    before = await _messages(scale, provider, 2, "before the ingester dies")
    scale.kill_service("jaeger-ingester-1")
    try:
        after = await _messages(scale, provider, 4, "after the ingester died")
        # The group gives the dead one's partitions to the other (after its session times
        # out); what it had read but not stored is read again, since offsets are committed
        # only after storage.
        await _all_whole(traces, [reply for reply, _ in before + after], timeout=120)
    finally:
        scale.start_service("jaeger-ingester-1")
