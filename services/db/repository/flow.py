"""Flow events: each step of a message (OMNI2's checks, model and tool calls, errors) and the
refusals the dashboard answers itself, every row with its message's trace id."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.db.models import FlowEvent
from services.db.repository.tables import table

_flow = table(FlowEvent)


@dataclass
class FlowRecord:
    """A flow event before it is stored (collected during a turn, stored with it)."""

    kind: str
    name: str
    status: str
    duration_ms: float | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    span_id: str | None = None


async def add_flow(
    session: AsyncSession,
    flow: list[FlowRecord],
    trace_id: str,
    user_id: str,
    conversation_id: str | None,
) -> None:
    if flow:
        connection = await session.connection()
        await connection.execute(insert(_flow), flow_rows(flow, trace_id, user_id, conversation_id))


def flow_rows(
    flow: Sequence[FlowRecord], trace_id: str, user_id: str, conversation_id: str | None
) -> list[dict[str, Any]]:
    return [
        {
            "conversation_id": conversation_id,
            "user_id": user_id,
            "trace_id": trace_id,
            "span_id": record.span_id,
            "seq": seq,
            "kind": record.kind,
            "name": record.name,
            "status": record.status,
            "duration_ms": record.duration_ms,
            "detail": record.detail,
        }
        for seq, record in enumerate(flow)
    ]


async def flow_events(
    session: AsyncSession, *, trace_id: str | None = None, conversation_id: str | None = None
) -> list[FlowEvent]:
    query = select(FlowEvent).order_by(FlowEvent.id)
    if trace_id is not None:
        query = query.where(FlowEvent.trace_id == trace_id)
    if conversation_id is not None:
        query = query.where(FlowEvent.conversation_id == conversation_id)
    return list((await session.scalars(query)).all())
