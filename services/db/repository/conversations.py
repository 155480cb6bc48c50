"""Conversations and their messages; a turn saved with its usage and flow events at once."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.db.models import Conversation, FlowEvent, Message, Usage
from services.db.repository.flow import FlowRecord, flow_rows
from services.db.repository.tables import table
from services.db.repository.usage import Reservation, settle_many

_messages, _usage, _flow = table(Message), table(Usage), table(FlowEvent)
_conversations = table(Conversation)


async def create_conversation(
    session: AsyncSession, conversation_id: str, user_id: str, trace_id: str
) -> None:
    connection = await session.connection()
    await connection.execute(
        insert(_conversations), {"id": conversation_id, "user_id": user_id, "trace_id": trace_id}
    )


async def messages_since(session: AsyncSession, user_id: str, since: datetime) -> int:
    """User messages accepted since `since` (the rate limit counts these)."""
    count = await session.scalar(
        select(func.count(Message.id)).where(
            Message.user_id == user_id, Message.role == "user", Message.created_at >= since
        )
    )
    return int(count or 0)


@dataclass
class TurnRecord:
    conversation_id: str
    user_id: str
    trace_id: str
    user_text: str | None = None  # None: the message was refused before it was accepted
    assistant_text: str | None = None
    provider: str = ""
    model: str = ""
    tokens_input: int = 0
    tokens_output: int = 0
    cost: float = 0.0
    flow: list[FlowRecord] = field(default_factory=list)
    reservation: Reservation | None = None  # settled with the usage above when saved


async def save_turns(session: AsyncSession, turns: Sequence[TurnRecord]) -> None:
    """Store messages' rows, every row with its message's trace id: one statement per table
    for all of them (OMNI2 writes the turns that end together in one transaction)."""
    connection = await session.connection()
    messages, usage, flow = [], [], []
    for turn in turns:
        ids = {"conversation_id": turn.conversation_id, "user_id": turn.user_id}
        messages += [
            ids | {"role": role, "content": text, "trace_id": turn.trace_id}
            for role, text in (("user", turn.user_text), ("assistant", turn.assistant_text))
            if text is not None
        ]
        if turn.tokens_input or turn.tokens_output or turn.cost:
            usage.append(
                ids
                | {
                    "provider": turn.provider,
                    "model": turn.model,
                    "tokens_input": turn.tokens_input,
                    "tokens_output": turn.tokens_output,
                    "cost": turn.cost,
                    "trace_id": turn.trace_id,
                }
            )
        flow += flow_rows(turn.flow, turn.trace_id, turn.user_id, turn.conversation_id)
    settled = [
        (turn.reservation, turn.tokens_input + turn.tokens_output, turn.cost)
        for turn in turns
        if turn.reservation is not None
    ]
    for target, rows in ((_messages, messages), (_usage, usage), (_flow, flow)):
        if rows:
            await connection.execute(insert(target), rows)
    await settle_many(session, settled)


async def conversation_messages(session: AsyncSession, conversation_id: str) -> list[Message]:
    rows = await session.scalars(
        select(Message).where(Message.conversation_id == conversation_id).order_by(Message.id)
    )
    return list(rows.all())
