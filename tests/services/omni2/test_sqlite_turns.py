"""OMNI2's transactions on SQLite take turns in the process, instead of meeting in SQLite's
busy handler (which sleeps up to 100 ms between tries: a burst's checks waited over a second)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sqlalchemy import text

from services.db import Database


def test_sqlite_transactions_of_a_process_never_overlap(tmp_path: Path) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'omni2.db'}")
    events: list[tuple[str, int]] = []

    async def transaction(number: int) -> None:
        async with db.session() as session:
            events.append(("begin", number))
            await session.execute(text("SELECT 1"))
            await asyncio.sleep(0.01)  # another task would start its transaction here
            events.append(("end", number))

    async def run() -> None:
        await asyncio.gather(*(transaction(n) for n in range(5)))
        await db.dispose()

    asyncio.run(run())
    # Each transaction ends before the next one begins, in the order they asked.
    assert events == [(kind, n) for n in range(5) for kind in ("begin", "end")]


def test_transactions_on_other_databases_do_not_take_turns(tmp_path: Path) -> None:
    # The lock is SQLite's: PostgreSQL has row locks and many writers.
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'omni2.db'}")
    db.dialect = "postgresql"  # only the dialect decides; no server needed to see it
    events: list[tuple[str, int]] = []

    async def transaction(number: int) -> None:
        async with db._turn():
            events.append(("begin", number))
            await asyncio.sleep(0.01)
            events.append(("end", number))

    async def run() -> None:
        await asyncio.gather(*(transaction(n) for n in range(2)))

    asyncio.run(run())
    assert events[:2] == [("begin", 0), ("begin", 1)]
