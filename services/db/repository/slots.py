"""Connection slots: the open chat connections OMNI2 replicas count together against the
per-user connection limit (OMNI2_CONNECTION_SLOTS=database)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.db.models import ConnectionSlot, RateWindow
from services.db.repository.tables import insert_missing, table

_rates, _slots = table(RateWindow), table(ConnectionSlot)


async def take_connection_slot(
    session: AsyncSession,
    user_id: str,
    limit: int,
    slot: tuple[str, str],
    now: float,
    stale_after_s: float,
) -> tuple[bool, int]:
    """(taken, open before) for `slot` = (slot id, replica): below `limit` open connections
    of the user in every replica, record this one, atomically (the user's lock row first, as
    `accept_within_rate` takes it). Slots not refreshed for `stale_after_s` are dropped."""
    connection = await session.connection()
    lock = update(_rates).where(_rates.c.user_id == user_id).values(checked_at=_rates.c.checked_at)
    if (await connection.execute(lock)).rowcount == 0:
        await insert_missing(session, _rates, {"user_id": user_id, "accepted": []})
        await connection.execute(lock)
    mine = _slots.c.user_id == user_id
    await connection.execute(delete(_slots).where(mine, _slots.c.seen_at < now - stale_after_s))
    count = select(func.count()).select_from(_slots).where(mine)
    used = int((await connection.execute(count)).scalar_one())
    if used >= limit:
        return False, used
    slot_id, replica = slot
    await connection.execute(
        insert(_slots).values(slot_id=slot_id, user_id=user_id, replica=replica, seen_at=now)
    )
    return True, used


async def free_connection_slot(session: AsyncSession, slot_id: str) -> None:
    await session.execute(delete(_slots).where(_slots.c.slot_id == slot_id))


async def refresh_connection_slots(
    session: AsyncSession, slot_ids: Sequence[str], now: float
) -> None:
    """These connections are still open."""
    if slot_ids:
        statement = update(_slots).where(_slots.c.slot_id.in_(slot_ids)).values(seen_at=now)
        await session.execute(statement)
