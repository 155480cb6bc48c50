"""Failed logins: the dashboard's login limits, shared by its replicas.

A row per user name or client address ("scope"), its recent failure times in one JSON list.
An attempt locks its address row, then its user row (always in that order: two attempts
never wait for each other in a cycle), decides, and writes both in one transaction.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import ColumnElement, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.db.models import LoginFailures
from services.db.repository.tables import insert_missing, table

_logins = table(LoginFailures)


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
    await insert_missing(session, _logins, values)
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
