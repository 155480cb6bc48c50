"""Usage: the usage rows, the rate window, and each user's day with what answers in progress
have reserved of it (owned by OMNI2 replicas, settled when their usage is saved)."""

from __future__ import annotations

import dataclasses
import functools
import time
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Update, bindparam, delete, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from services.db.models import DailyUsage, RateWindow, ReplicaHeartbeat, Usage, UsageReservation
from services.db.repository.tables import insert_missing, table

_rates, _days = table(RateWindow), table(DailyUsage)
_reservations, _heartbeats = table(UsageReservation), table(ReplicaHeartbeat)


def start_of_day(now: datetime | None = None) -> datetime:
    now = now or datetime.now(UTC)
    return now.replace(hour=0, minute=0, second=0, microsecond=0)


async def usage_since(session: AsyncSession, user_id: str, since: datetime) -> tuple[int, float]:
    """(tokens, cost) the user used since `since`."""
    tokens, cost = (
        await session.execute(
            select(
                func.coalesce(func.sum(Usage.tokens_input + Usage.tokens_output), 0),
                func.coalesce(func.sum(Usage.cost), 0.0),
            ).where(Usage.user_id == user_id, Usage.created_at >= since)
        )
    ).one()
    return int(tokens), float(cost)


async def usage_rows(session: AsyncSession, conversation_id: str) -> list[Usage]:
    rows = await session.scalars(
        select(Usage).where(Usage.conversation_id == conversation_id).order_by(Usage.id)
    )
    return list(rows.all())


def minute_ago(now: datetime | None = None) -> datetime:
    return (now or datetime.now(UTC)) - timedelta(minutes=1)


# -- limits that hold across parallel connections ---------------------------------------------
#
# A message check runs in one transaction: the rate window (the user's lock row) is updated
# first, then the daily usage row is reserved with a conditional UPDATE. A refused check rolls
# the transaction back, so neither the window nor the reservation keeps a refused message.
# Neither statement reads more rows as history grows.


@dataclass(frozen=True)
class RateCheck:
    accepted: bool
    recent: int  # messages accepted in the window before this one
    retry_after_s: float = 0.0  # refused: until the oldest message in the window leaves it


async def accept_within_rate(
    session: AsyncSession, user_id: str, limit: int, now: float, window_s: float = 60.0
) -> RateCheck:
    """Count the user's messages of the last `window_s` seconds and, below `limit`, record this
    one, atomically: the first UPDATE holds the user's row lock (PostgreSQL) or the database
    write lock (SQLite) until the transaction ends, so parallel checks of one user take turns.
    The row is created on a user's first message only (the UPDATE finds none)."""
    connection = await session.connection()
    key = _rates.c.user_id == user_id
    lock = update(_rates).where(key).values(checked_at=now).returning(_rates.c.accepted)
    stored = (await connection.execute(lock)).first()
    if stored is None:
        await insert_missing(session, _rates, {"user_id": user_id, "accepted": []})
        stored = (await connection.execute(lock)).first()  # the lock, on the row now there
    accepted = stored[0] if stored is not None else None
    recent = [t for t in (accepted or []) if isinstance(t, (int, float)) and t > now - window_s]
    if len(recent) >= limit:
        return RateCheck(False, len(recent), max(0.0, min(recent) + window_s - now))
    await connection.execute(update(_rates).where(key).values(accepted=[*recent, now][-limit:]))
    return RateCheck(True, len(recent))


@dataclass(frozen=True)
class Reservation:
    """What one accepted message reserved of its user's day, until its usage is saved."""

    user_id: str
    day: date
    tokens: int
    cost: float
    id: str | None = None  # its usage_reservations row (a replica's); None: no owner recorded


@dataclass(frozen=True)
class DayUsage:
    tokens: int
    cost: float
    reserved_tokens: int
    reserved_cost: float


@dataclass(frozen=True)
class UsageCheck:
    reservation: Reservation | None  # None: refused, the remaining allowance is taken
    before: DayUsage  # the day's usage and reservations before this message


def today(now: datetime | None = None) -> date:
    return (now or datetime.now(UTC)).date()


async def reserve_usage(
    session: AsyncSession,
    user_id: str,
    day: date,
    *,
    tokens: int,
    cost: float,
    token_limit: int | None,
    cost_limit: float | None,
    owner: str | None = None,
) -> UsageCheck:
    """Reserve `tokens` and `cost` of the user's day if used plus reserved is below each limit,
    in one conditional UPDATE: of parallel connections, only as many pass as the limits hold.
    The day's row is created by the day's first message (when the UPDATE finds no row).
    `owner`: the replica answering the message, recorded with the reservation (OMNI2 replicas
    on one database); None for one OMNI2, which releases every reservation when it starts."""
    reserve = _reserve_statement(token_limit is not None, cost_limit is not None)
    values = {
        "user": user_id,
        "on": day,
        "add_tokens": tokens,
        "add_cost": cost,
        "token_limit": token_limit,
        "cost_limit": cost_limit,
    }
    connection = await session.connection()
    row = (await connection.execute(reserve, values)).first()
    if row is None and await _day_row_missing(session, user_id, day):
        await insert_missing(session, _days, {"user_id": user_id, "day": day})
        row = (await connection.execute(reserve, values)).first()
    if row is not None:
        before = DayUsage(
            int(row.tokens),
            float(row.cost),
            int(row.reserved_tokens) - tokens,
            float(row.reserved_cost) - cost,
        )
        reservation = Reservation(user_id, day, tokens, cost)
        if owner is not None:
            reservation = await _record_owner(session, reservation, owner)
        return UsageCheck(reservation, before)
    return UsageCheck(None, await day_usage(session, user_id, day))


async def _record_owner(session: AsyncSession, reservation: Reservation, owner: str) -> Reservation:
    owned = dataclasses.replace(reservation, id=str(uuid.uuid4()))
    connection = await session.connection()
    await connection.execute(
        insert(_reservations).values(
            id=owned.id,
            user_id=owned.user_id,
            day=owned.day,
            replica=owner,
            tokens=owned.tokens,
            cost=owned.cost,
            reserved_at=time.time(),
        )
    )
    return owned


@functools.cache
def _reserve_statement(token_limit: bool, cost_limit: bool) -> Update:
    """The conditional UPDATE of `reserve_usage`, built once per kind of limit (its parameters:
    user, on, add_tokens, add_cost, token_limit, cost_limit)."""
    below: list[ColumnElement[bool]] = []
    if token_limit:
        below.append(_days.c.tokens + _days.c.reserved_tokens < bindparam("token_limit"))
    if cost_limit:
        below.append(_days.c.cost + _days.c.reserved_cost < bindparam("cost_limit"))
    return (
        update(_days)
        .where(_days.c.user_id == bindparam("user"), _days.c.day == bindparam("on"), *below)
        .values(
            reserved_tokens=_days.c.reserved_tokens + bindparam("add_tokens"),
            reserved_cost=_days.c.reserved_cost + bindparam("add_cost"),
        )
        .returning(_days.c.tokens, _days.c.cost, _days.c.reserved_tokens, _days.c.reserved_cost)
    )


async def _day_row_missing(session: AsyncSession, user_id: str, day: date) -> bool:
    connection = await session.connection()
    found = await connection.scalar(
        select(_days.c.user_id).where(_days.c.user_id == user_id, _days.c.day == day)
    )
    return found is None


async def day_usage(session: AsyncSession, user_id: str, day: date) -> DayUsage:
    connection = await session.connection()
    row = (
        await connection.execute(
            select(
                _days.c.tokens, _days.c.cost, _days.c.reserved_tokens, _days.c.reserved_cost
            ).where(_days.c.user_id == user_id, _days.c.day == day)
        )
    ).first()
    if row is None:
        return DayUsage(0, 0.0, 0, 0.0)
    return DayUsage(int(row[0]), float(row[1]), int(row[2]), float(row[3]))


async def settle_usage(
    session: AsyncSession, reservation: Reservation, tokens: int, cost: float
) -> None:
    """Replace a reservation by the usage it became (zero for an answer that failed early)."""
    await settle_many(session, [(reservation, tokens, cost)])


async def settle_many(
    session: AsyncSession, settled: Sequence[tuple[Reservation, int, float]]
) -> None:
    """Each reservation's usage counts; its reserved amount is taken back only while it is
    still held: a replica's reservation may have been released already (its replica looked
    dead), and taking it back twice would free the allowance of answers still running."""
    if not settled:
        return
    connection = await session.connection()
    owned = [reservation.id for reservation, _, _ in settled if reservation.id is not None]
    held: set[str] = set()
    if owned:
        gone = delete(_reservations).where(_reservations.c.id.in_(owned))
        held = set((await connection.scalars(gone.returning(_reservations.c.id))).all())
    rows = [
        _settlement(
            reservation.user_id,
            reservation.day,
            (tokens, cost),
            (reservation.tokens, reservation.cost)
            if reservation.id is None or reservation.id in held
            else (0, 0.0),
        )
        for reservation, tokens, cost in settled
    ]
    await _update_days(session, rows)


def _settlement(
    user_id: str, day: date, used: tuple[int, float], released: tuple[int, float]
) -> dict[str, Any]:
    return {
        "user": user_id,
        "on": day,
        "add_tokens": used[0],
        "add_cost": used[1],
        "reserved_tokens_taken": released[0],
        "reserved_cost_taken": released[1],
    }


async def _update_days(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """The day rows in one order (user, day) in every transaction: two transactions that
    update the same days never wait for each other in a cycle (PostgreSQL's row locks)."""
    if rows:
        connection = await session.connection()
        await connection.execute(_SETTLE, sorted(rows, key=lambda r: (r["user"], r["on"])))


_SETTLE = (
    update(_days)
    .where(_days.c.user_id == bindparam("user"), _days.c.day == bindparam("on"))
    .values(
        tokens=_days.c.tokens + bindparam("add_tokens"),
        cost=_days.c.cost + bindparam("add_cost"),
        reserved_tokens=_days.c.reserved_tokens - bindparam("reserved_tokens_taken"),
        reserved_cost=_days.c.reserved_cost - bindparam("reserved_cost_taken"),
    )
)


async def release_reservations(session: AsyncSession, replica: str | None = None) -> int:
    """At OMNI2's start, release what was reserved by answers that can no longer be saved;
    returns how many reservations (or, without owners, user days) were released.

    replica None (one OMNI2 serves the database): every reservation, since no answer is in
    flight. A replica: only its own rows, left by its previous process; the other replicas'
    answers may be running."""
    if replica is not None:
        return await _release_rows(session, _reservations.c.replica == replica)
    connection = await session.connection()
    result = await connection.execute(
        update(_days)
        .where((_days.c.reserved_tokens != 0) | (_days.c.reserved_cost != 0))
        .values(reserved_tokens=0, reserved_cost=0.0)
    )
    await connection.execute(delete(_reservations))
    return int(getattr(result, "rowcount", 0) or 0)


async def replica_seen(session: AsyncSession, replica: str, now: float) -> None:
    """`replica` is running (its reservations are not stale)."""
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    statement = dialect.insert(_heartbeats).values(replica=replica, seen_at=now)
    connection = await session.connection()
    await connection.execute(
        statement.on_conflict_do_update(
            index_elements=[_heartbeats.c.replica], set_={"seen_at": statement.excluded.seen_at}
        )
    )


async def release_stale_reservations(
    session: AsyncSession, now: float, stale_after_s: float
) -> int:
    """Release the reservations of replicas not seen for `stale_after_s` (gone, or never
    seen); returns how many. Safe to run from every replica at once: a row is released by
    the transaction that deletes it, and rows another transaction holds are skipped."""
    cutoff = now - stale_after_s
    alive = select(_heartbeats.c.replica).where(_heartbeats.c.seen_at >= cutoff)
    released = await _release_rows(session, _reservations.c.replica.not_in(alive))
    connection = await session.connection()
    await connection.execute(delete(_heartbeats).where(_heartbeats.c.seen_at < cutoff))
    return released


async def _release_rows(session: AsyncSession, which: ColumnElement[bool]) -> int:
    """Delete the chosen reservation rows and take their amounts off their days. Rows locked
    by another transaction (being settled or released) are skipped (PostgreSQL; SQLite has
    one writer at a time): nobody waits, and no amount is taken back twice."""
    connection = await session.connection()
    chosen = select(_reservations.c.id).where(which).with_for_update(skip_locked=True)
    released = await connection.execute(
        delete(_reservations)
        .where(_reservations.c.id.in_(chosen))
        .returning(
            _reservations.c.user_id,
            _reservations.c.day,
            _reservations.c.tokens,
            _reservations.c.cost,
        )
    )
    per_day: dict[tuple[str, date], tuple[int, float]] = defaultdict(lambda: (0, 0.0))
    count = 0
    for user_id, day, tokens, cost in released:
        count += 1
        held_tokens, held_cost = per_day[(user_id, day)]
        per_day[(user_id, day)] = (held_tokens + int(tokens), held_cost + float(cost))
    await _update_days(
        session,
        [_settlement(user, day, (0, 0.0), held) for (user, day), held in per_day.items()],
    )
    return count
