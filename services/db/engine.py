"""The async engine and sessions: one `Database` per process, whichever service it is.

OMNI2 creates and upgrades the tables at start (and seeds the demo users); the dashboard and
`omni-trace users` use the database OMNI2 made.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from pathlib import Path
from typing import Any

from pydantic import SecretStr
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import Session

from otel.instrumentation import instrument_engine
from services.db.models import Base
from services.db.upgrade import upgrade

log = logging.getLogger(__name__)

# Where OMNI2, the dashboard and `omni-trace users` find the database unless told otherwise.
DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///var/omni2.db"

DEFAULT_TIMEOUT_S = 10.0


def _sqlite_pragmas(busy_timeout_s: float) -> Any:
    def pragmas(dbapi_connection: Any, _record: Any) -> None:
        # WAL lets the CLI (`omni-trace users`), the dashboard and tests write while OMNI2
        # reads.
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")
        cursor.close()

    return pragmas


def redacted_url(url: str | SecretStr) -> str:
    """The URL without its password, for logs."""
    if isinstance(url, SecretStr):
        url = url.get_secret_value()
    return make_url(url).render_as_string(hide_password=True)


_REPLICA = "omni2.replica"


def replica_of(session: AsyncSession | Session) -> str | None:
    """The OMNI2 replica whose process holds `session` (None: one OMNI2, or not OMNI2)."""
    replica = session.info.get(_REPLICA)
    return replica if isinstance(replica, str) else None


class Database:
    """One engine per process; `url` is an async URL (sqlite+aiosqlite, postgresql+asyncpg).

    The URL may hold a password: it is kept as a SecretStr (`redacted_url` for logs).
    `replica` names the OMNI2 replica of this process when replicas share the database: the
    usage reservations its sessions make are its own (`replica_of`). `timeout_s`: how long a
    connection waits to connect (asyncpg) or for SQLite's write lock. `makes_files` False (a
    process that uses the database OMNI2 made): the SQLite file and its folder are never
    created; a session on a file that does not exist raises FileNotFoundError."""

    def __init__(
        self,
        url: str | SecretStr,
        sql_spans: bool = False,
        replica: str | None = None,
        *,
        timeout_s: float | None = None,
        makes_files: bool = True,
    ) -> None:
        self.url = url if isinstance(url, SecretStr) else SecretStr(url)
        self.replica = replica
        url = self.url.get_secret_value()
        parsed = make_url(url)
        self.dialect = parsed.get_backend_name()
        self.sqlite_file: Path | None = None
        self._makes_files = makes_files
        kwargs: dict[str, Any] = {}
        if self.dialect == "sqlite" and timeout_s is None:
            timeout_s = DEFAULT_TIMEOUT_S
        if timeout_s is not None:
            # Both sqlite3 (busy wait) and asyncpg (connect) call their wait `timeout`.
            kwargs["connect_args"] = {"timeout": timeout_s}
        if self.dialect == "sqlite":
            database = parsed.database
            if database and database != ":memory:":
                self.sqlite_file = Path(database)
                if makes_files:
                    self.sqlite_file.parent.mkdir(parents=True, exist_ok=True)
        # hide_parameters: a database error's text would otherwise carry the bound values
        # (message text, password hashes) into logs, spans and flow events.
        self.engine = create_async_engine(url, hide_parameters=True, **kwargs)
        if self.dialect == "sqlite":
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas(timeout_s or 0))
        if sql_spans:
            instrument_engine(self.engine)
        self.sessions = async_sessionmaker(
            self.engine, expire_on_commit=False, info={_REPLICA: replica}
        )
        # SQLite: this process's transactions take turns (see `session`), per event loop.
        self._turns: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
            weakref.WeakKeyDictionary()
        )

    async def create_tables(self) -> None:
        async with self.engine.begin() as conn:
            for step in await conn.run_sync(upgrade):
                log.info("database upgraded: %s", step)

    async def drop_tables(self) -> None:
        async with self.engine.begin() as conn:
            await conn.run_sync(Base.metadata.drop_all)

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """A session in a transaction, committed on success.

        On SQLite the transactions of this process take turns. SQLite has one writer, and
        a transaction that finds the database locked waits in SQLite's busy handler, which
        sleeps between tries (1, 2, 5, ... up to 100 ms each): under a burst of messages a
        check waited over a second for locks each held for a millisecond. Queued here, they
        go in order without sleeping. Other processes (the dashboard, the users command)
        still meet the busy handler, rarely."""
        if not self._makes_files and self.sqlite_file and not self.sqlite_file.exists():
            # Connecting would create an empty file; OMNI2 makes the database when it starts.
            raise FileNotFoundError(f"no database file {self.sqlite_file}")
        async with self._turn(), self.sessions() as session, session.begin():
            yield session

    def _turn(self) -> AbstractAsyncContextManager[object]:
        if self.dialect != "sqlite":
            return nullcontext()
        loop = asyncio.get_running_loop()
        lock = self._turns.get(loop)
        if lock is None:
            lock = self._turns[loop] = asyncio.Lock()
        return lock

    async def dispose(self) -> None:
        await self.engine.dispose()
