"""Conversation-consistent tail sampling in the Kafka pipeline's ingesters (docs/sampling.md),
on the real pipeline: with a ratio of 0.5, each conversation is kept or dropped whole as the
hash of its id says; in a dropped conversation a refused message and a message whose tool call
failed (under a turn that answered well) are kept; every session trace is kept; and the audit,
as a function and as `omni-trace audit --json`, finds 0 broken chains among kept messages and
names the sampled-out conversations instead of calling their messages broken."""

from __future__ import annotations

import asyncio
import json
import secrets
import sqlite3
import time
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider

from omni_trace.cli import main
from omni_trace.stack import Stack
from omni_trace.stack.client import open_chat
from omni_trace.traces import (
    AuditQuery,
    JaegerClient,
    TraceFetcher,
    assert_message_chain,
    has_spans_named,
    run_audit,
)
from omni_trace.traces.audit import find_sampled_out
from otel.names import Attr, Service, SpanName
from otel.sampling import conversation_keep
from services.common.tokens import issue_token
from tests.db import Admin
from tests.whole_stack.conftest import new_user, running_stack

pytestmark = [pytest.mark.stack, pytest.mark.slow]

SECRET = secrets.token_urlsafe(32)
RATIO = 0.5
WAIT_S = 3.0  # the ingesters' decision wait, short for the test
SLOW_MS = 1500.0  # a first token later than this is kept whatever the conversation


@pytest.fixture(scope="module")
def own_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(
        tmp_path_factory.mktemp("tail-sampling"),
        SECRET,
        viewers=False,
        trace_pipeline="kafka",
        conversation_sample_ratio=RATIO,
        tail_sampling_wait_s=WAIT_S,
        slow_first_token_ms=SLOW_MS,
    ) as stack:
        yield stack


async def test_conversations_are_kept_or_dropped_whole(
    own_stack: Stack, provider: TracerProvider, capsys: pytest.CaptureFixture[str]
) -> None:
    token = issue_token(new_user(Admin(own_stack.info.omni2_database_url)), SECRET)
    # (conversation, session trace, reply), until both kinds are seen and one refused.
    chats = []
    failed = tool_failed = None
    failing = ""  # the dropped conversation of those two
    while len({conversation_keep(c, RATIO) for c, *_ in chats}) < 2 or failed is None:
        assert len(chats) < 30, "30 conversations hashed to one side: the hash is broken"
        async with open_chat(
            own_stack.info.dashboard_ws_url, token, tracer_provider=provider
        ) as chat:
            conversation = str(chat.conversation_id)
            reply = await chat.send("sampled or not?")
            if failed is None and not conversation_keep(conversation, RATIO):
                # A message OMNI2 refuses (no text) in a dropped conversation: kept anyway.
                failed = await chat.send("")
                # A message answered well whose tool call failed (the turn, the relay and
                # the client's span are fine; only execute_tool failed): kept anyway too.
                tool_failed = await chat.send("run a broken query please")
                failing = conversation
        assert reply.ok, reply.frame
        chats.append((conversation, chat.session_trace_id, reply))
    provider.force_flush()
    kept = {c for c, *_ in chats if conversation_keep(c, RATIO)}
    dropped = {c for c, *_ in chats} - kept

    with JaegerClient(own_stack.info.jaeger_query_url) as jaeger:
        traces = TraceFetcher(jaeger)
        # Every session trace is kept, and OMNI2's connect span carries the decision.
        for conversation, session_id, _ in chats:
            session = traces.wait(
                session_id,
                has_spans_named((Service.OMNI2, SpanName.CONNECT), (Service.TRAEFIK, "GET")),
                what="the session trace (always kept)",
                timeout=60,
            )
            session.assert_attribute(
                f"{Service.OMNI2}:{SpanName.CONNECT}",
                Attr.SAMPLE_KEEP,
                conversation in kept,
            )
        # Kept conversations: their messages are whole.
        for conversation, _, reply in chats:
            if conversation in kept:
                message, session = traces.message(reply, timeout=60)
                assert_message_chain(message, session)
        # Past the decision wait (and the pipeline's delay), a dropped conversation's good
        # message is absent, and stays so.
        time.sleep(WAIT_S + 5)
        for conversation, _, reply in chats:
            if conversation in dropped:
                assert jaeger.get_trace(reply.trace_id) == [], (
                    f"message {reply.trace_id} of sampled-out {conversation} was kept"
                )
        # The refused message of a dropped conversation is kept.
        assert failed.frame["type"] == "error", failed.frame
        refused = traces.wait(
            failed.trace_id,
            has_spans_named((Service.OMNI2, SpanName.TURN), (Service.DASHBOARD, SpanName.RELAY)),
            what="the refused message (always kept)",
            timeout=60,
        )
        refused.assert_attribute(f"{Service.OMNI2}:{SpanName.TURN}", Attr.ERROR_TYPE)
        assert tool_failed is not None and tool_failed.ok, tool_failed.frame
        tool_call = f"{Service.OMNI2}:{SpanName.execute_tool('database_query')}"
        failed_tool = traces.wait(
            tool_failed.trace_id,
            has_spans_named(
                (Service.OMNI2, SpanName.TURN),
                (Service.OMNI2, SpanName.execute_tool("database_query")),
            ),
            what="the message whose tool failed (always kept)",
            timeout=60,
        )
        failed_tool.assert_attribute(tool_call, Attr.ERROR_TYPE, "tool_error")
        failed_tool.assert_attribute(f"{Service.OMNI2}:{SpanName.TURN}", Attr.SAMPLE_KEEP, False)

        # The audit: 0 broken among the kept messages; the dropped ones are named as sampled
        # out, not broken.
        for conversation, _, reply in chats:
            query = AuditQuery(conversation_id=conversation)
            reports = run_audit(jaeger, query, settle_s=5)
            assert not any(r.broken for r in reports), [r.status for r in reports]
            found = {r.trace_id for r in reports}
            assert (reply.trace_id in found) == (conversation in kept)
            assert find_sampled_out(jaeger, query) == (
                [] if conversation in kept else [conversation]
            )

    # What a user runs says the same, in numbers: the dropped conversation with the failed
    # messages holds those two (kept, whole), and is named sampled out.
    capsys.readouterr()
    code = main(
        [
            *("audit", "--conversation", failing, "--json", "--allow-errors"),
            *("--settle", "3s", "--jaeger", own_stack.info.jaeger_query_url),
        ]
    )
    data = json.loads(capsys.readouterr().out)
    assert code == 0, data
    assert (data["kept"], data["broken"], data["sampled_out"]) == (2, 0, 1), data
    assert data["sampled_out_conversations"] == [failing]
    assert {m["trace_id"] for m in data["messages"]} == {failed.trace_id, tool_failed.trace_id}


async def test_a_slow_first_token_is_kept_in_a_dropped_conversation(
    own_stack: Stack, provider: TracerProvider
) -> None:
    token = issue_token(new_user(Admin(own_stack.info.omni2_database_url)), SECRET)
    database = own_stack.info.omni2_database_url.removeprefix("sqlite+aiosqlite:///")
    slow = None
    for _ in range(30):
        async with open_chat(
            own_stack.info.dashboard_ws_url, token, tracer_provider=provider
        ) as chat:
            if conversation_keep(str(chat.conversation_id), RATIO):
                continue  # a kept conversation keeps everything anyway
            # OMNI2's checks write to its database: holding its write lock for a while
            # makes this message's first token late, as a slow dependency would.
            lock = sqlite3.connect(database, timeout=10, isolation_level=None)
            lock.execute("BEGIN IMMEDIATE")
            sending = asyncio.create_task(chat.send("slow to start"))
            await asyncio.sleep(SLOW_MS * 1.6 / 1000)
            lock.execute("COMMIT")
            lock.close()
            slow = await sending
            break
    assert slow is not None, "30 conversations, none sampled out"
    assert slow.ok, slow.frame
    provider.force_flush()
    with JaegerClient(own_stack.info.jaeger_query_url) as jaeger:
        kept = TraceFetcher(jaeger).wait(
            slow.trace_id,
            has_spans_named((Service.OMNI2, SpanName.TURN), (Service.DASHBOARD, SpanName.RELAY)),
            what="the slow message of a sampled-out conversation (always kept)",
            timeout=60,
        )
    turn = kept.one(f"{Service.OMNI2}:{SpanName.TURN}")
    kept.expect(turn.attributes.get(Attr.SAMPLE_KEEP) is False, "its conversation is out")
    waited = float(turn.attributes.get(Attr.TIME_TO_FIRST_TOKEN, 0))
    kept.expect(waited >= SLOW_MS, f"its first token came after {waited:.0f} ms")
