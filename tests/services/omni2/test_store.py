"""The turns' rows: stored together when they end together, and a bad turn fails alone."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel.names import Attr, SpanName
from services.db import Database
from services.db.repository import conversations as conversations_repo
from services.db.repository import usage as usage_repo
from services.db.repository.conversations import TurnRecord
from services.db.repository.flow import FlowRecord
from services.db.seed import seed_demo, seed_roles
from services.omni2.store import Store

T = TypeVar("T")


def _turn(conversation: str, n: int) -> TurnRecord:
    return TurnRecord(
        conversation,
        "alice",
        f"{n:032x}",
        user_text=f"question {n}",
        assistant_text=f"answer {n}",
        provider="offline",
        model="m",
        tokens_input=3,
        tokens_output=4,
        cost=0.001,
        flow=[FlowRecord("check", "user", "ok"), FlowRecord("model_call", "m", "ok")],
    )


def _with_store(database_url: str, body: Callable[[Store], Awaitable[T]]) -> T:
    async def run() -> T:
        db = Database(database_url)
        await db.create_tables()
        await seed_roles(db)
        await seed_demo(db)
        async with db.session() as session:
            for conversation in ("c1", "c2"):
                await conversations_repo.create_conversation(
                    session, conversation, "alice", "0" * 32
                )
        try:
            return await body(Store(db))
        finally:
            await db.dispose()

    return asyncio.run(run())


async def _messages(store: Store, conversation: str) -> list[tuple[str, str, str]]:
    async with store.db.session() as session:
        rows = await conversations_repo.conversation_messages(session, conversation)
    return [(m.role, m.content, m.trace_id) for m in rows]


def test_turns_that_end_together_share_a_transaction(
    database_url: str, spans: InMemorySpanExporter
) -> None:
    turns = [_turn("c1", n) for n in range(20)]

    async def body(store: Store) -> tuple[list[tuple[str, str, str]], int]:
        await asyncio.gather(*(store.save_turn(t, {}) for t in turns))
        async with store.db.session() as session:
            usage = len(await usage_repo.usage_rows(session, "c1"))
        return await _messages(store, "c1"), usage

    stored, usage_rows = _with_store(database_url, body)
    # Every row, in the order the turns ended, each with its message's trace id.
    assert stored == [
        row
        for n in range(20)
        for row in (
            ("user", f"question {n}", f"{n:032x}"),
            ("assistant", f"answer {n}", f"{n:032x}"),
        )
    ]
    assert usage_rows == 20
    persisted = [s for s in spans.get_finished_spans() if s.name == SpanName.PERSIST]
    batches = [dict(s.attributes or {})[Attr.PERSIST_BATCH] for s in persisted]
    assert len(persisted) == 20 and all(s.status.is_ok for s in persisted)
    assert max(batches) > 1  # fewer transactions than turns


def test_a_turn_that_cannot_be_stored_fails_alone(
    database_url: str, spans: InMemorySpanExporter
) -> None:
    turns = [_turn("c1", 0), _turn("c2", 1), _turn("no-such-conversation", 2), _turn("c2", 3)]

    async def body(store: Store) -> tuple[list[tuple[str, str, str]], ...]:
        await asyncio.gather(*(store.save_turn(t, {}) for t in turns))
        return await _messages(store, "c1"), await _messages(store, "c2")

    first, second = _with_store(database_url, body)
    assert [m[2] for m in first] == [f"{0:032x}"] * 2
    assert [m[2] for m in second] == [f"{1:032x}"] * 2 + [f"{3:032x}"] * 2
    failed = [
        s for s in spans.get_finished_spans() if s.name == SpanName.PERSIST and not s.status.is_ok
    ]
    assert len(failed) == 1
    assert dict(failed[0].attributes or {})[Attr.ERROR_TYPE] == "IntegrityError"


def test_a_turn_alone_is_written_at_once(database_url: str, spans: InMemorySpanExporter) -> None:
    async def body(store: Store) -> list[tuple[str, str, str]]:
        await store.save_turn(_turn("c1", 7), {})
        return await _messages(store, "c1")

    assert len(_with_store(database_url, body)) == 2
    (persisted,) = [s for s in spans.get_finished_spans() if s.name == SpanName.PERSIST]
    assert dict(persisted.attributes or {})[Attr.PERSIST_BATCH] == 1


@pytest.mark.parametrize("writing", [False, True], ids=["before-it-ran", "while-writing"])
def test_turns_waiting_when_the_writer_is_cancelled_are_not_left_waiting(
    database_url: str, writing: bool
) -> None:
    """OMNI2 stopping cancels the writer: every turn it held is answered, none hangs."""

    async def body(store: Store) -> list[str]:
        saves = [asyncio.ensure_future(store.save_turn(_turn("c1", n), {})) for n in range(3)]
        await asyncio.sleep(0)  # the saves are queued and the writer created
        writer = store._turns._writer
        assert writer is not None
        for _ in range(5 if writing else 0):
            await asyncio.sleep(0)  # the writer runs into its transaction
        writer.cancel()
        results = await asyncio.wait_for(asyncio.gather(*saves, return_exceptions=True), 10)
        return [type(r).__name__ for r in results]

    assert _with_store(database_url, body) == ["CancelledError"] * 3
