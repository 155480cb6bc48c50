"""Persistence with spans: each write of OMNI2 is one `chat.persist` span in its trace."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator, Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from sqlalchemy.exc import SQLAlchemyError

from otel.names import Attr, SpanName
from services.db import Database
from services.db.repository import conversations as conversations_repo
from services.db.repository import flow as flow_repo
from services.db.repository.conversations import TurnRecord
from services.db.repository.flow import FlowRecord

log = logging.getLogger(__name__)
tracer = trace.get_tracer(__name__)


class GroupCommit:
    """Writes the turns that end at about the same time in one transaction.

    A transaction per turn was most of what storing a turn cost under load (OMNI2's
    profile, docs/performance.md "Group commit"). Here a turn waits for the transaction that
    holds it, the next one to start: nothing is held back on purpose, so a turn alone is
    written at once, and under load the turns that ended while one transaction ran share the
    next. When a shared transaction fails, each of its turns is written on its own, so a bad
    turn fails alone."""

    max_batch = 64

    def __init__(self, db: Database) -> None:
        self._db = db
        self._waiting: list[tuple[TurnRecord, asyncio.Future[int]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def save(self, turn: TurnRecord) -> int:
        """Store the turn's rows; returns how many turns its transaction held."""
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._waiting.append((turn, future))
        if self._writer is None:
            self._writer = asyncio.create_task(self._write_waiting())
            self._writer.add_done_callback(self._writer_stopped)
        return await future

    async def _write_waiting(self) -> None:
        try:
            while self._waiting:
                batch = self._waiting[: self.max_batch]
                await self._write(batch)
                del self._waiting[: len(batch)]
        finally:
            self._writer = None  # at once: a turn saved from now on starts a new writer

    def _writer_stopped(self, task: asyncio.Task[None]) -> None:
        """A writer that stopped before its queue was written (cancelled with OMNI2, even
        before it ran) answers the turns still waiting, unless a new writer has them."""
        if self._writer is task:  # cancelled before it ran: its `finally` never did
            self._writer = None
        if self._writer is not None or not (task.cancelled() or task.exception()):
            return
        for _, future in self._waiting:
            if future.done():
                continue
            if task.cancelled():
                future.cancel()
            else:
                future.set_exception(task.exception() or RuntimeError("writer stopped"))
        self._waiting.clear()

    async def _write(self, batch: list[tuple[TurnRecord, asyncio.Future[int]]]) -> None:
        try:
            async with self._db.session() as session:
                await conversations_repo.save_turns(session, [turn for turn, _ in batch])
        except (SQLAlchemyError, OSError) as err:
            if len(batch) > 1:
                for one in batch:
                    await self._write([one])
            elif not batch[0][1].done():
                batch[0][1].set_exception(err)
            return
        for _, future in batch:
            if not future.done():  # its caller may have been cancelled
                future.set_result(len(batch))


class Store:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._turns = GroupCommit(db)

    def _span_attributes(self, attributes: dict[str, Any], operation: str) -> dict[str, Any]:
        return attributes | {Attr.DB_SYSTEM: self.db.dialect, Attr.DB_OPERATION: operation}

    @contextlib.contextmanager
    def _persist(
        self, attributes: dict[str, Any], *, rows: int, flow_events: int, what: str, trace_id: str
    ) -> Iterator[Span]:
        """One `chat.persist` span around a write. A database failure is recorded on the span
        and logged, never raised (the user already has the answer)."""
        with tracer.start_as_current_span(
            SpanName.PERSIST,
            kind=SpanKind.CLIENT,
            attributes=self._span_attributes(attributes, "insert"),
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            span.set_attributes({Attr.FLOW_EVENTS: flow_events, Attr.ROWS: rows})
            try:
                yield span
            except (SQLAlchemyError, OSError) as err:
                span.set_attribute(Attr.ERROR_TYPE, type(err).__name__)
                span.set_status(Status(StatusCode.ERROR, f"could not store {what}"))
                log.error("could not store %s of trace %s: %s", what, trace_id, err)

    async def save_turn(self, turn: TurnRecord, attributes: dict[str, Any]) -> None:
        """Store a message's rows (failures are recorded, not raised)."""
        rows = (
            (turn.user_text is not None)
            + (turn.assistant_text is not None)
            + bool(turn.tokens_input or turn.tokens_output or turn.cost)
            + len(turn.flow)
        )
        with self._persist(
            attributes,
            rows=rows,
            flow_events=len(turn.flow),
            what="the message",
            trace_id=turn.trace_id,
        ) as span:
            span.set_attribute(Attr.PERSIST_BATCH, await self._turns.save(turn))

    async def open_conversation(
        self,
        conversation_id: str,
        user_id: str,
        trace_id: str,
        flow: Sequence[FlowRecord],
        attributes: dict[str, Any],
    ) -> None:
        """The conversation row and the flow events of the accepted connection."""
        with tracer.start_as_current_span(
            SpanName.PERSIST,
            kind=SpanKind.CLIENT,
            attributes=self._span_attributes(attributes, "insert"),
        ) as span:
            span.set_attributes({Attr.ROWS: 1 + len(flow), Attr.FLOW_EVENTS: len(flow)})
            async with self.db.session() as session:
                await conversations_repo.create_conversation(
                    session, conversation_id, user_id, trace_id
                )
                await flow_repo.add_flow(session, list(flow), trace_id, user_id, conversation_id)

    async def record_flow(
        self,
        flow: Sequence[FlowRecord],
        trace_id: str,
        user_id: str,
        conversation_id: str | None,
        attributes: dict[str, Any],
    ) -> None:
        """Flow events of something that is not a turn, e.g. a refused connection (failures
        are recorded, not raised)."""
        with self._persist(
            attributes,
            rows=len(flow),
            flow_events=len(flow),
            what="flow events",
            trace_id=trace_id,
        ):
            async with self.db.session() as session:
                await flow_repo.add_flow(session, list(flow), trace_id, user_id, conversation_id)
