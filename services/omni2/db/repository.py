"""Every query OMNI2 and `omni-trace users` make, as plain async functions over a session."""

from __future__ import annotations

import dataclasses
import functools
import time
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, cast

from sqlalchemy import (
    ColumnElement,
    Table,
    Update,
    bindparam,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from services.omni2.db.models import (
    Base,
    BlockedUser,
    ConnectionSlot,
    Conversation,
    DailyUsage,
    FlowEvent,
    LoginFailures,
    Message,
    RateWindow,
    ReplicaHeartbeat,
    Role,
    Usage,
    UsageReservation,
    User,
)

ALL_TOOLS = "*"


def _table(model: type[Base]) -> Table:
    return cast(Table, model.__table__)


# The statements run for every message use the tables (SQLAlchemy Core) rather than the ORM:
# no identity map, no unit of work, the cost is the query's (issue 9's profile).
_users, _roles, _blocks = _table(User), _table(Role), _table(BlockedUser)
_messages, _usage, _flow = _table(Message), _table(Usage), _table(FlowEvent)
_rates, _days, _conversations = _table(RateWindow), _table(DailyUsage), _table(Conversation)
_slots = _table(ConnectionSlot)
_reservations, _heartbeats = _table(UsageReservation), _table(ReplicaHeartbeat)
_logins = _table(LoginFailures)


class NotFound(LookupError):
    pass


@dataclass(frozen=True)
class UserContext:
    """What OMNI2 knows about a user: role, permissions, MCP access, effective limits."""

    user_id: str
    name: str
    role: str
    active: bool
    permissions: tuple[str, ...]
    mcp_tools: tuple[str, ...]
    blocked_reason: str | None
    daily_token_limit: int | None
    daily_cost_limit: float | None
    rate_limit_per_minute: int | None
    max_connections: int | None = None  # None: OMNI2's setting
    token_generation: int = 0  # tokens of an older generation are refused

    @property
    def blocked(self) -> bool:
        return self.blocked_reason is not None

    def may(self, permission: str) -> bool:
        return permission in self.permissions

    def may_use_tool(self, tool: str) -> bool:
        return self.may("tools") and (ALL_TOOLS in self.mcp_tools or tool in self.mcp_tools)


# A user's context with the role's limits where the user has none of their own: one statement,
# built once (it runs before every message).
_USER_CONTEXT = (
    select(
        _users.c.id,
        _users.c.name,
        _roles.c.name,
        _users.c.active,
        _roles.c.permissions,
        _roles.c.mcp_tools,
        _blocks.c.reason,
        func.coalesce(_users.c.daily_token_limit, _roles.c.daily_token_limit),
        func.coalesce(_users.c.daily_cost_limit, _roles.c.daily_cost_limit),
        func.coalesce(_users.c.rate_limit_per_minute, _roles.c.rate_limit_per_minute),
        func.coalesce(_users.c.max_connections, _roles.c.max_connections),
        func.coalesce(_users.c.token_generation, 0),
    )
    .join_from(_users, _roles, _users.c.role_name == _roles.c.name)
    .outerjoin(_blocks, _blocks.c.user_id == _users.c.id)
)
_LOAD_USER = _USER_CONTEXT.where(_users.c.id == bindparam("user_id"))


def _context(row: Any) -> UserContext:
    (uid, name, role, active, permissions, tools, blocked, tokens, cost, rate, connections, gen) = (
        row
    )
    return UserContext(
        user_id=uid,
        name=name,
        role=role,
        active=bool(active),
        permissions=tuple(permissions or ()),
        mcp_tools=tuple(tools or ()),
        blocked_reason=blocked,
        daily_token_limit=tokens,
        daily_cost_limit=cost,
        rate_limit_per_minute=rate,
        max_connections=connections,
        token_generation=int(gen),
    )


async def load_user(session: AsyncSession, user_id: str) -> UserContext | None:
    connection = await session.connection()
    row = (await connection.execute(_LOAD_USER, {"user_id": user_id})).first()
    return _context(row) if row is not None else None


# -- conversations, history, usage -------------------------------------------------------------


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


@dataclass
class FlowRecord:
    """A flow event before it is stored (collected during a turn, stored with it)."""

    kind: str
    name: str
    status: str
    duration_ms: float | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    span_id: str | None = None


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
        flow += _flow_rows(turn.flow, turn.trace_id, turn.user_id, turn.conversation_id)
    settled = [
        (turn.reservation, turn.tokens_input + turn.tokens_output, turn.cost)
        for turn in turns
        if turn.reservation is not None
    ]
    for table, rows in ((_messages, messages), (_usage, usage), (_flow, flow)):
        if rows:
            await connection.execute(insert(table), rows)
    await _settle(session, settled)


async def add_flow(
    session: AsyncSession,
    flow: list[FlowRecord],
    trace_id: str,
    user_id: str,
    conversation_id: str | None,
) -> None:
    if flow:
        connection = await session.connection()
        await connection.execute(
            insert(_flow), _flow_rows(flow, trace_id, user_id, conversation_id)
        )


def _flow_rows(
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


# -- reading the audit trail ---------------------------------------------------------------------


async def conversation_messages(session: AsyncSession, conversation_id: str) -> list[Message]:
    rows = await session.scalars(
        select(Message).where(Message.conversation_id == conversation_id).order_by(Message.id)
    )
    return list(rows.all())


async def flow_events(
    session: AsyncSession, *, trace_id: str | None = None, conversation_id: str | None = None
) -> list[FlowEvent]:
    query = select(FlowEvent).order_by(FlowEvent.id)
    if trace_id is not None:
        query = query.where(FlowEvent.trace_id == trace_id)
    if conversation_id is not None:
        query = query.where(FlowEvent.conversation_id == conversation_id)
    return list((await session.scalars(query)).all())


async def usage_rows(session: AsyncSession, conversation_id: str) -> list[Usage]:
    rows = await session.scalars(
        select(Usage).where(Usage.conversation_id == conversation_id).order_by(Usage.id)
    )
    return list(rows.all())


# -- administration (`omni-trace users ...`) -------------------------------------------------------


async def list_users(session: AsyncSession) -> list[UserContext]:
    connection = await session.connection()
    rows = await connection.execute(_USER_CONTEXT.order_by(_users.c.id))
    return [_context(row) for row in rows]


async def list_roles(session: AsyncSession) -> list[Role]:
    return list((await session.scalars(select(Role).order_by(Role.name))).all())


async def _user(session: AsyncSession, user_id: str) -> User:
    user = await session.get(User, user_id)
    if user is None:
        raise NotFound(f"no user {user_id!r}")
    return user


async def add_user(
    session: AsyncSession,
    user_id: str,
    role: str,
    name: str = "",
    active: bool = True,
    password_hash: str | None = None,
) -> None:
    if await session.get(Role, role) is None:
        raise NotFound(f"no role {role!r}")
    if await session.get(User, user_id) is not None:
        raise ValueError(f"user {user_id!r} exists already")
    session.add(
        User(
            id=user_id,
            name=name or user_id,
            role_name=role,
            active=active,
            password_hash=password_hash,
        )
    )


async def password_hash(session: AsyncSession, user_id: str) -> str | None:
    """The user's login hash; None when there is no such user or it has no password."""
    return await session.scalar(select(User.password_hash).where(User.id == user_id))


async def users_without_password(session: AsyncSession) -> list[str]:
    rows = await session.scalars(
        select(User.id).where(User.password_hash.is_(None)).order_by(User.id)
    )
    return list(rows.all())


async def login_record(session: AsyncSession, user_id: str) -> tuple[str | None, int]:
    """The user's login hash (None: no such user, or no password) and token generation."""
    row = (
        await session.execute(
            select(User.password_hash, func.coalesce(User.token_generation, 0)).where(
                User.id == user_id
            )
        )
    ).first()
    return (None, 0) if row is None else (row[0], int(row[1]))


async def set_password_hash(session: AsyncSession, user_id: str, hashed: str | None) -> None:
    """Set (or with None: remove) a user's login password hash; the user's tokens issued
    until now are revoked (a changed password must end the sessions the old one opened)."""
    (await _user(session, user_id)).password_hash = hashed
    await bump_token_generation(session, user_id)


async def bump_token_generation(
    session: AsyncSession, user_id: str, only_from: int | None = None
) -> int | None:
    """Revoke every token issued to the user so far; returns the new generation. One
    UPDATE, so that two revocations at once both count. With `only_from`, only if that is
    still the user's generation (None otherwise: a logout with a token revoked already)."""
    current = func.coalesce(_users.c.token_generation, 0)
    statement = update(_users).where(_users.c.id == user_id)
    if only_from is not None:
        statement = statement.where(current == only_from)
    connection = await session.connection()
    result = await connection.execute(
        statement.values(token_generation=current + 1).returning(_users.c.token_generation)
    )
    generation = result.scalar_one_or_none()
    if generation is not None:
        return int(generation)
    if await session.scalar(select(User.id).where(User.id == user_id)) is None:
        raise NotFound(f"no user {user_id!r}")
    return None


async def token_states(
    session: AsyncSession, user_ids: Sequence[str]
) -> dict[str, tuple[int, str | None]]:
    """Each known user's token generation and block reason (None: not blocked)."""
    if not user_ids:
        return {}
    connection = await session.connection()
    rows = await connection.execute(
        select(_users.c.id, func.coalesce(_users.c.token_generation, 0), _blocks.c.reason)
        .outerjoin(_blocks, _blocks.c.user_id == _users.c.id)
        .where(_users.c.id.in_(list(user_ids)))
    )
    return {uid: (int(gen), reason) for uid, gen, reason in rows}


async def set_active(session: AsyncSession, user_id: str, active: bool) -> None:
    (await _user(session, user_id)).active = active


async def block_user(session: AsyncSession, user_id: str, reason: str, by: str = "") -> None:
    await _user(session, user_id)
    await session.execute(delete(BlockedUser).where(BlockedUser.user_id == user_id))
    session.add(BlockedUser(user_id=user_id, reason=reason, blocked_by=by))


async def unblock_user(session: AsyncSession, user_id: str) -> bool:
    await _user(session, user_id)
    result = await session.execute(delete(BlockedUser).where(BlockedUser.user_id == user_id))
    return bool(getattr(result, "rowcount", 0))


_UNSET: Any = object()


async def set_limits(
    session: AsyncSession,
    user_id: str,
    *,
    daily_tokens: int | None = _UNSET,
    daily_cost: float | None = _UNSET,
    rate_per_minute: int | None = _UNSET,
    max_connections: int | None = _UNSET,
) -> None:
    """Set a user's own limits (None: back to the role's). Unset arguments stay as they are."""
    user = await _user(session, user_id)
    if daily_tokens is not _UNSET:
        user.daily_token_limit = daily_tokens
    if daily_cost is not _UNSET:
        user.daily_cost_limit = daily_cost
    if rate_per_minute is not _UNSET:
        user.rate_limit_per_minute = rate_per_minute
    if max_connections is not _UNSET:
        user.max_connections = max_connections


def minute_ago(now: datetime | None = None) -> datetime:
    return (now or datetime.now(UTC)) - timedelta(minutes=1)


# -- limits that hold across parallel connections ---------------------------------------------
#
# A message check runs in one transaction: the rate window (the user's lock row) is updated
# first, then the daily usage row is reserved with a conditional UPDATE. A refused check rolls
# the transaction back, so neither the window nor the reservation keeps a refused message.
# Neither statement reads more rows as history grows.


async def _insert_missing(session: AsyncSession, table: Table, values: dict[str, Any]) -> None:
    """INSERT .. ON CONFLICT DO NOTHING (SQLite and PostgreSQL): the row exists afterwards."""
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    connection = await session.connection()
    await connection.execute(dialect.insert(table).values(**values).on_conflict_do_nothing())


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
        await _insert_missing(session, _rates, {"user_id": user_id, "accepted": []})
        stored = (await connection.execute(lock)).first()  # the lock, on the row now there
    accepted = stored[0] if stored is not None else None
    recent = [t for t in (accepted or []) if isinstance(t, (int, float)) and t > now - window_s]
    if len(recent) >= limit:
        return RateCheck(False, len(recent), max(0.0, min(recent) + window_s - now))
    await connection.execute(update(_rates).where(key).values(accepted=[*recent, now][-limit:]))
    return RateCheck(True, len(recent))


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
        await _insert_missing(session, _rates, {"user_id": user_id, "accepted": []})
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
        await _insert_missing(session, _days, {"user_id": user_id, "day": day})
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
    await _settle(session, [(reservation, tokens, cost)])


async def _settle(session: AsyncSession, settled: Sequence[tuple[Reservation, int, float]]) -> None:
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


# -- failed logins (the dashboard's login limits, shared by its replicas) ----------------------
#
# A row per user name or client address ("scope"), its recent failure times in one JSON list.
# An attempt locks its address row, then its user row (always in that order: two attempts
# never wait for each other in a cycle), decides, and writes both in one transaction.


def _login_key(scope: str, key: str) -> ColumnElement[bool]:
    return (_logins.c.scope == scope) & (_logins.c.key == key)


async def lock_login_key(session: AsyncSession, scope: str, key: str) -> list[float] | None:
    """The key's stored failure times, its row locked until the transaction ends (the row
    lock on PostgreSQL, the write lock on SQLite); None when the key has no row."""
    connection = await session.connection()
    lock = (
        update(_logins)
        .where(_login_key(scope, key))
        .values(last_failed=_logins.c.last_failed)
        .returning(_logins.c.failures)
    )
    row = (await connection.execute(lock)).first()
    if row is None:
        return None
    return [t for t in row[0] or [] if isinstance(t, (int, float))]


async def add_login_key(
    session: AsyncSession, scope: str, key: str, now: float, expired_before: float, max_keys: int
) -> list[float]:
    """Make the key's row (no failures yet) and lock it, after making room for it: the scope
    keeps at most `max_keys` rows, whatever number of names a client sends. Rows whose last
    failure is before `expired_before` go first, then the least recently failed. Returns the
    key's failures (another transaction may have made the row first)."""
    connection = await session.connection()
    scoped = _logins.c.scope == scope
    # The last failure of the newest row that no longer fits (read without a lock: locking
    # the rows kept would block every attempt on them).
    newest_beyond = (
        select(_logins.c.last_failed)
        .where(scoped)
        .order_by(_logins.c.last_failed.desc())
        .limit(1)
        .offset(max_keys - 1)
    )
    doomed = _logins.c.last_failed < expired_before
    if (beyond := await connection.scalar(newest_beyond)) is not None:
        doomed = doomed | (_logins.c.last_failed <= beyond)
    # Rows that attempts in flight hold are skipped: nobody waits here.
    chosen = select(_logins.c.key).where(scoped, doomed).with_for_update(skip_locked=True)
    await connection.execute(delete(_logins).where(scoped, _logins.c.key.in_(chosen)))
    values = {"scope": scope, "key": key, "failures": [], "last_failed": now}
    await _insert_missing(session, _logins, values)
    return await lock_login_key(session, scope, key) or []


async def set_login_failures(
    session: AsyncSession, scope: str, key: str, failures: Sequence[float]
) -> None:
    """Store the key's failure times (its row locked by this transaction); none: the row goes."""
    connection = await session.connection()
    if not failures:
        await connection.execute(delete(_logins).where(_login_key(scope, key)))
        return
    await connection.execute(
        update(_logins)
        .where(_login_key(scope, key))
        .values(failures=list(failures), last_failed=max(failures))
    )


async def login_keys(session: AsyncSession, scope: str) -> int:
    """How many keys of `scope` are stored."""
    count = select(func.count()).select_from(_logins).where(_logins.c.scope == scope)
    return int(await session.scalar(count) or 0)
