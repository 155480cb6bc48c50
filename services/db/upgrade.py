"""Columns and tables added after a database was first made.

`create_all` makes missing tables, never missing columns, and a run directory's database
(var/omni2.db) outlives upgrades. Each column listed here is nullable, so adding it to an
existing table is safe on SQLite and PostgreSQL; there is no migration tool for this one step.
A table added later may need a step when it appears in an old database (`upgrade`).
"""

from __future__ import annotations

from sqlalchemy import Connection, inspect, text, update

from services.db.models import Base, DailyUsage

# (table, column) in the order they were added to models.py.
ADDED_COLUMNS: tuple[tuple[str, str], ...] = (
    ("users", "password_hash"),
    ("users", "token_generation"),
)


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


def upgrade(conn: Connection) -> list[str]:
    """Make what is missing (tables, then columns) and take the one-time steps of tables new
    to this database; returns what was added or done, for the log."""
    inspector = inspect(conn)
    before_owners = inspector.has_table("usage_daily") and not inspector.has_table(
        "usage_reservations"
    )
    Base.metadata.create_all(conn)
    done = add_missing_columns(conn)
    if before_owners:
        done += release_unowned_reservations(conn)
    return done


def release_unowned_reservations(conn: Connection) -> list[str]:
    """A database from before reservation owners (usage_reservations is new to it): what its
    days hold reserved has no owner, and the OMNI2 that reserved it would have released it at
    its next start. Released here, once; from now on each reservation has an owner."""
    result = conn.execute(
        update(DailyUsage)
        .where((DailyUsage.reserved_tokens != 0) | (DailyUsage.reserved_cost != 0))
        .values(reserved_tokens=0, reserved_cost=0.0)
    )
    released = int(getattr(result, "rowcount", 0) or 0)
    return (
        [f"usage_daily: released the unowned reservations of {released} days"] if released else []
    )
