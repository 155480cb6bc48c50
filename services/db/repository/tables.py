"""What the repository modules share: a model's table, and the insert that tolerates a race.

The statements run for every message use the tables (SQLAlchemy Core) rather than the ORM:
no identity map, no unit of work, the cost is the query's.
"""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from services.db.models import Base


def table(model: type[Base]) -> Table:
    return cast(Table, model.__table__)


async def insert_missing(session: AsyncSession, target: Table, values: dict[str, Any]) -> None:
    """INSERT .. ON CONFLICT DO NOTHING (SQLite and PostgreSQL): the row exists afterwards."""
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    connection = await session.connection()
    await connection.execute(dialect.insert(target).values(**values).on_conflict_do_nothing())
