"""Persistence with spans: each write of OMNI2 is one `chat.persist` span in its trace."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from otel.names import Attr, SpanName
from services.omni2.db import Database
from services.omni2.db import repository as repo
from services.omni2.db.repository import FlowRecord, TurnRecord

log = logging.getLogger(__name__)
tracer = trace.get_tracer(__name__)


class Store:
    def __init__(self, db: Database) -> None:
        self.db = db

    def _span_attributes(self, attributes: dict[str, Any], operation: str) -> dict[str, Any]:
        return attributes | {Attr.DB_SYSTEM: self.db.dialect, Attr.DB_OPERATION: operation}

    @contextlib.asynccontextmanager
    async def _write(
        self, attributes: dict[str, Any], *, rows: int, flow_events: int, what: str, trace_id: str
    ) -> AsyncIterator[AsyncSession]:
        """One `chat.persist` span around a write in its own session. A database failure is
        recorded on the span and logged, never raised (the user already has the answer)."""
        with tracer.start_as_current_span(
            SpanName.PERSIST,
            kind=SpanKind.CLIENT,
            attributes=self._span_attributes(attributes, "insert"),
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            span.set_attributes({Attr.FLOW_EVENTS: flow_events, Attr.ROWS: rows})
            try:
                async with self.db.session() as session:
                    yield session
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
        async with self._write(
            attributes,
            rows=rows,
            flow_events=len(turn.flow),
            what="the message",
            trace_id=turn.trace_id,
        ) as session:
            await repo.save_turn(session, turn)

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
                await repo.create_conversation(session, conversation_id, user_id, trace_id)
                await repo.add_flow(session, list(flow), trace_id, user_id, conversation_id)

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
        async with self._write(
            attributes,
            rows=len(flow),
            flow_events=len(flow),
            what="flow events",
            trace_id=trace_id,
        ) as session:
            await repo.add_flow(session, list(flow), trace_id, user_id, conversation_id)
