"""The scale-out parts, on one stack: OMNI2 on a PostgreSQL server the runner starts
(database=postgres), and the trace pipeline (trace_pipeline=kafka). The services export to
two Jaeger collectors (Traefik to the second, the Python services and the client to the
first), which write to a real Kafka broker; two ingesters (one consumer group) read it into a
persistent Badger store behind Jaeger's remote storage, which the query service reads. A
chat's chain is as whole there as on the small stack, survives a restart of the store and the
query service, and still arrives when an ingester stops."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import pytest
from opentelemetry.sdk.trace import TracerProvider

from omni_trace.doctor.probe import diagnose
from omni_trace.stack import Stack
from omni_trace.stack.client import ChatConnection, ChatReply, login, open_chat
from omni_trace.traces import (
    AuditQuery,
    JaegerClient,
    Trace,
    TraceFetcher,
    assert_message_chain,
    run_audit,
)
from otel.names import Service
from services.db.repository import conversations as conversations_repo
from tests.db import Admin
from tests.whole_stack.conftest import running_stack

pytestmark = [pytest.mark.stack, pytest.mark.slow]


@pytest.fixture(scope="module")
def own_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    run_dir = tmp_path_factory.mktemp("kafka-stack")
    with running_stack(
        run_dir,
        secrets.token_urlsafe(32),
        viewers=False,
        trace_pipeline="kafka",
        database="postgres",
    ) as stack:
        yield stack


@asynccontextmanager
async def _chat(stack: Stack, provider: TracerProvider) -> AsyncIterator[ChatConnection]:
    token = await login(stack.info.dashboard_url, "bob", stack.info.demo_passwords["bob"])
    async with open_chat(stack.info.dashboard_ws_url, token, tracer_provider=provider) as chat:
        yield chat


def _whole(traces: TraceFetcher, reply: ChatReply) -> tuple[Trace, Trace]:
    message, session = traces.message(reply, timeout=60)
    assert_message_chain(message, session)
    return message, session


def test_the_stack_file_names_every_part(own_stack: Stack) -> None:
    info = own_stack.info
    assert info.trace_pipeline == "kafka" and info.kafka_brokers
    assert set(info.jaeger_parts) == {
        "jaeger-collector-1",
        "jaeger-collector-2",
        "jaeger-ingester-1",
        "jaeger-ingester-2",
        "jaeger-storage",
        "jaeger-query",
    }
    # jaeger-client's UDP reports go to the first collector
    # (tests/whole_stack/test_legacy_ledger.py).
    assert info.jaeger_thrift_compact.endswith(f":{own_stack.ports.jaeger_thrift_compact}")
    # The doctor checks each part, and a probe goes through the whole chain.
    result = diagnose(info, user="alice", password=info.demo_passwords["alice"])
    checked = {c.name: c.ok for c in result.checks}
    assert all(checked[name] for name in info.jaeger_parts), result.render()
    assert result.healthy, result.render()


async def test_a_chat_is_one_whole_chain_through_kafka(
    own_stack: Stack, provider: TracerProvider, jaeger: JaegerClient
) -> None:
    async with _chat(own_stack, provider) as chat:
        replies = [
            await chat.send("Hello through Kafka"),
            await chat.send("How many products per category are in the database?"),
        ]
    assert all(r.ok for r in replies), [r.frame for r in replies]
    traces = TraceFetcher(jaeger, provider)
    for reply in replies:
        _, session = _whole(traces, reply)
        # Traefik's spans came through the second collector, the others through the first.
        session.assert_count(f"{Service.TRAEFIK}:*", at_least=3)
        session.assert_count(f"{Service.OMNI2}:*", at_least=1)
    # OMNI2 stored the conversation in the runner's PostgreSQL, each message with its trace id.
    assert own_stack.info.omni2_database_url.startswith("postgresql+asyncpg://")
    stored = Admin(own_stack.info.omni2_database_url)(
        lambda s: conversations_repo.conversation_messages(s, str(chat.conversation_id))
    )
    assert {m.trace_id for m in stored} == {r.trace_id for r in replies}
    # The audit, through the query service, says the same.
    reports = run_audit(
        jaeger, AuditQuery(conversation_id=chat.conversation_id, since_s=600), settle_s=15
    )
    assert [r.trace_id for r in reports] == [r.trace_id for r in replies]
    assert all(not r.broken and not r.errors for r in reports), [r.status for r in reports]


async def test_traces_survive_a_restart_of_the_store_and_the_query_service(
    own_stack: Stack, provider: TracerProvider, jaeger: JaegerClient
) -> None:
    async with _chat(own_stack, provider) as chat:
        reply = await chat.send("Keep me")
    before, _ = _whole(TraceFetcher(jaeger, provider), reply)
    own_stack.stop_service("jaeger-query")
    own_stack.restart_service("jaeger-storage")
    own_stack.start_service("jaeger-query")
    after = Trace(jaeger.get_trace(reply.trace_id))
    assert sorted(s.span_id for s in after) == sorted(s.span_id for s in before), after.tree()


async def test_an_ingester_stops_and_the_other_takes_its_partitions(
    own_stack: Stack, provider: TracerProvider, jaeger: JaegerClient
) -> None:
    own_stack.stop_service("jaeger-ingester-1")
    try:
        async with _chat(own_stack, provider) as chat:
            replies = [await chat.send(f"while one ingester is down {i}") for i in range(4)]
        for reply in replies:  # trace ids spread over the partitions: all of them are read
            _whole(TraceFetcher(jaeger, provider), reply)
    finally:
        own_stack.start_service("jaeger-ingester-1")
