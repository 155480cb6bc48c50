"""A throwaway PostgreSQL server for tests: the runner's own (omni_trace.stack.postgres), with
a cluster in a temp dir on a free port, stopped and deleted on exit."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import asyncpg

from omni_trace.stack.ports import free_port
from omni_trace.stack.postgres import PostgresServer


@contextmanager
def postgres_server() -> Iterator[str]:
    """Yields the base URL `postgresql+asyncpg://postgres@127.0.0.1:<port>`."""
    server = PostgresServer(Path(tempfile.mkdtemp(prefix="omni-trace-pg-")), free_port())
    try:
        yield server.start()
    finally:
        server.remove()


async def create_database(base_url: str, name: str) -> str:
    """A fresh, empty database on the server; returns its SQLAlchemy URL."""
    dsn = base_url.replace("postgresql+asyncpg://", "postgresql://") + "/postgres"
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return f"{base_url}/{name}"


async def emptied(url: str) -> str:
    """OMNI2's tables in `url`, created if missing and emptied (faster than a new database)."""
    from sqlalchemy import text

    from services.db import Base, Database

    db = Database(url)
    try:
        await db.create_tables()
        names = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
        async with db.engine.begin() as conn:
            await conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    finally:
        await db.dispose()
    return url
