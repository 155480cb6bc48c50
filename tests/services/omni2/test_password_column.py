"""Login passwords in OMNI2's database: a database made before them is upgraded at start, and
the seed gives demo users (only them) their demo password's hash, never overwriting one."""

from __future__ import annotations

import asyncio

from sqlalchemy import text

from services.common.passwords import hash_password, verify_password
from services.db import Database
from services.db.repository import users as users_repo
from services.db.seed import seed_demo
from tests.db import Admin, user_columns


async def _start(url: str) -> None:
    db = Database(url)
    try:
        await db.create_tables()
        await seed_demo(db)
    finally:
        await db.dispose()


def test_an_old_database_gets_the_column_and_demo_users_their_passwords(
    database_url: str,
) -> None:
    # The model has the column; drop it behind SQLAlchemy's back as an old database lacks it.
    db = Database(database_url)

    async def make_old() -> None:
        try:
            await db.create_tables()
            async with db.engine.begin() as conn:
                await conn.execute(text("ALTER TABLE users DROP COLUMN password_hash"))
                await conn.execute(
                    text(
                        "INSERT INTO roles (name, description, permissions, mcp_tools) "
                        "VALUES ('user', '', '[]', '[]')"
                    )
                )
                for user_id in ("alice", "zoe"):
                    await conn.execute(
                        text(
                            "INSERT INTO users (id, name, role_name, active, created_at) "
                            "VALUES (:id, :id, 'user', true, CURRENT_TIMESTAMP)"
                        ),
                        {"id": user_id},
                    )
        finally:
            await db.dispose()

    asyncio.run(make_old())
    assert "password_hash" not in asyncio.run(user_columns(database_url))

    asyncio.run(_start(database_url))  # what OMNI2 does when it starts

    assert "password_hash" in asyncio.run(user_columns(database_url))
    admin = Admin(database_url)
    alice = admin(lambda s: users_repo.password_hash(s, "alice"))
    assert alice is not None and verify_password(alice, "alice-demo")
    assert (
        admin(lambda s: users_repo.password_hash(s, "zoe")) is None
    )  # not a demo user: no password


def test_the_seed_never_overwrites_a_password_set(database_url: str) -> None:
    asyncio.run(_start(database_url))
    admin = Admin(database_url)
    admin(lambda s: users_repo.set_password_hash(s, "alice", hash_password("changed-by-admin")))
    asyncio.run(_start(database_url))  # OMNI2 restarts
    alice = admin(lambda s: users_repo.password_hash(s, "alice"))
    assert alice is not None
    assert verify_password(alice, "changed-by-admin")
    assert not verify_password(alice, "alice-demo")
