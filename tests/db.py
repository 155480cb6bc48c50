"""Reading and changing OMNI2's database from a test (its own engine, like the CLI)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from sqlalchemy import inspect
from sqlalchemy.ext.asyncio import AsyncSession

from services.db import Database

T = TypeVar("T")


class Admin:
    """`admin(lambda s: repo.block_user(s, ...))` runs one repository call in a transaction."""

    def __init__(self, url: str) -> None:
        self.url = url

    def __call__(self, fn: Callable[[AsyncSession], Awaitable[T]]) -> T:
        async def run() -> T:
            db = Database(self.url)
            try:
                async with db.session() as session:
                    return await fn(session)
            finally:
                await db.dispose()

        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(run())
        # Called from an async test: run on a loop of its own (blocking the test briefly).
        with ThreadPoolExecutor(1) as pool:
            return pool.submit(asyncio.run, run()).result()


async def user_columns(url: str) -> set[str]:
    """The columns of the users table as the database has them (to see an upgrade happen)."""
    db = Database(url)
    try:
        async with db.engine.connect() as conn:
            return await conn.run_sync(
                lambda sync: {c["name"] for c in inspect(sync).get_columns("users")}
            )
    finally:
        await db.dispose()
