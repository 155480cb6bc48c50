"""The dashboard's refusal log: refusals at the dashboard go into the shared flow events, with a
trace id.

The dashboard answers some frames itself (rate limit, frame size, too many messages
awaiting an answer); without a row they would never show in `omni-trace audit` or the
database. Rows are collected per connection and written once when it ends, so a flood
costs one write, not one per frame. A database failure is logged, never raised.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from otel.names import Flow
from services.db import Database
from services.db.repository import flow as flow_repo
from services.db.repository.flow import FlowRecord

log = logging.getLogger(__name__)


@dataclass
class ConnectionRefusals:
    """What one connection had refused: a flow event per trace id."""

    by_trace: dict[str, list[FlowRecord]] = field(default_factory=dict)

    def add(self, trace_id: str, name: str, detail: dict[str, Any]) -> None:
        self.by_trace.setdefault(trace_id, []).append(
            FlowRecord(Flow.REFUSED, name, "denied", detail=detail)
        )

    def __bool__(self) -> bool:
        return bool(self.by_trace)


class RefusalLog:
    """Writes to the shared database, through the dashboard's one `Database` (its owner, the
    app, disposes of it): the dashboard never creates the database (OMNI2 does when it
    starts); a refusal with no database to go to is logged."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def write(
        self, refusals: ConnectionRefusals, user_id: str, conversation_id: str | None
    ) -> None:
        if not refusals:
            return
        try:
            async with self._db.session() as session:
                for trace_id, flow in refusals.by_trace.items():
                    await flow_repo.add_flow(session, flow, trace_id, user_id, conversation_id)
        except (SQLAlchemyError, OSError) as err:
            log.error("could not store the refusals of conversation %s: %s", conversation_id, err)
