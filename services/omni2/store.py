"""Persistence with spans: each write of OMNI2 is one `chat.persist` span in its trace."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from sqlalchemy.exc import SQLAlchemyError

from otel.names import Attr, SpanName
from services.omni2.db import Database
from services.omni2.db import repository as repo
from services.omni2.db.repository import FlowRecord, TurnRecord
from services.omni2.model import ChatMessage

log = logging.getLogger(__name__)
tracer = trace.get_tracer(__name__)


class Store:
    def __init__(self, db: Database) -> None:
        self.db = db

    def _span_attributes(self, attributes: dict[str, Any], operation: str) -> dict[str, Any]:
        return attributes | {Attr.DB_SYSTEM: self.db.dialect, Attr.DB_OPERATION: operation}

    async def save_turn(self, turn: TurnRecord, attributes: dict[str, Any]) -> bool:
        """Store a message's rows; a database failure is recorded on the span and logged,
        never raised (the user already has the answer)."""
        with tracer.start_as_current_span(
            SpanName.PERSIST,
            kind=SpanKind.CLIENT,
            attributes=self._span_attributes(attributes, "insert"),
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            rows = (
                (turn.user_text is not None)
                + (turn.assistant_text is not None)
                + bool(turn.tokens_input or turn.tokens_output or turn.cost)
                + len(turn.flow)
            )
            span.set_attributes({Attr.FLOW_EVENTS: len(turn.flow), Attr.ROWS: rows})
            try:
                async with self.db.session() as session:
                    await repo.save_turn(session, turn)
            except (SQLAlchemyError, OSError) as err:
                span.set_attribute(Attr.ERROR_TYPE, type(err).__name__)
                span.set_status(Status(StatusCode.ERROR, "could not store the message"))
                log.error("could not store message of trace %s: %s", turn.trace_id, err)
                return False
            return True

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
                await session.flush()
                await repo.add_flow(session, list(flow), trace_id, user_id, conversation_id)

    async def record_flow(
        self,
        flow: Sequence[FlowRecord],
        trace_id: str,
        user_id: str,
        conversation_id: str | None,
        attributes: dict[str, Any],
    ) -> None:
        """Flow events of something that is not a turn (a refused connection)."""
        with tracer.start_as_current_span(
            SpanName.PERSIST,
            kind=SpanKind.CLIENT,
            attributes=self._span_attributes(attributes, "insert"),
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            span.set_attributes({Attr.FLOW_EVENTS: len(flow), Attr.ROWS: len(flow)})
            try:
                async with self.db.session() as session:
                    await repo.add_flow(session, list(flow), trace_id, user_id, conversation_id)
            except (SQLAlchemyError, OSError) as err:
                span.set_attribute(Attr.ERROR_TYPE, type(err).__name__)
                span.set_status(Status(StatusCode.ERROR, "could not store flow events"))
                log.error("could not store flow events of trace %s: %s", trace_id, err)

    async def history(
        self, conversation_id: str, max_messages: int, attributes: dict[str, Any]
    ) -> list[ChatMessage]:
        with tracer.start_as_current_span(
            SpanName.HISTORY,
            kind=SpanKind.CLIENT,
            attributes=self._span_attributes(attributes, "select"),
        ) as span:
            async with self.db.session() as session:
                rows = await repo.history(session, conversation_id, max_messages)
            span.set_attribute(Attr.HISTORY_MESSAGES, len(rows))
        return [ChatMessage("user" if role == "user" else "assistant", text) for role, text in rows]
