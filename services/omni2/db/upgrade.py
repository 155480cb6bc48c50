"""Columns added after a database was first made.

`create_all` makes missing tables, never missing columns, and a run directory's database
(var/omni2.db) outlives upgrades. Each column listed here is nullable, so adding it to an
existing table is safe on SQLite and PostgreSQL; there is no migration tool for this one step.
"""

from __future__ import annotations

from sqlalchemy import Connection, inspect, text

from services.omni2.db.models import Base

# (table, column) in the order they were added to models.py.
ADDED_COLUMNS: tuple[tuple[str, str], ...] = (("users", "password_hash"),)


def add_missing_columns(conn: Connection) -> list[str]:
    """Add the listed columns a table lacks; returns `table.column` of each one added."""
    inspector = inspect(conn)
    added = []
    for table_name, column_name in ADDED_COLUMNS:
        if not inspector.has_table(table_name):
            continue
        if column_name in {c["name"] for c in inspector.get_columns(table_name)}:
            continue
        column = Base.metadata.tables[table_name].c[column_name]
        if not column.nullable:
            raise RuntimeError(f"{table_name}.{column_name} must be nullable to be added")
        kind = column.type.compile(dialect=conn.dialect)
        conn.execute(text(f"ALTER TABLE {table_name} ADD COLUMN {column_name} {kind}"))
        added.append(f"{table_name}.{column_name}")
    return added
