"""Users, roles and blocks: who may chat, with which tools and limits, and the login's
password hashes and token generations (the dashboard reads these too)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.db.models import BlockedUser, Role, User
from services.db.repository.tables import table

ALL_TOOLS = "*"

_users, _roles, _blocks = table(User), table(Role), table(BlockedUser)


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
