"""Users' token generations in OMNI2's database (SQLite and PostgreSQL): a database made before
them gets the column at start and its users count as generation 0; a revocation raises it,
one at a time even when two come at once, and a logout's (`only_from`) only from the
generation its token carries."""

from __future__ import annotations

import asyncio

from sqlalchemy import text

from services.db import Database
from services.db.repository import users as users_repo
from services.db.seed import seed_roles
from tests.db import Admin, user_columns


async def _start(url: str) -> None:
    db = Database(url)
    try:
        await db.create_tables()
        await seed_roles(db)
    finally:
        await db.dispose()


async def _make_old(url: str) -> None:
    """A database of the version before token generations, with a user in it."""
    db = Database(url)
    try:
        await db.create_tables()
        async with db.engine.begin() as conn:
            await conn.execute(text("ALTER TABLE users DROP COLUMN token_generation"))
            await conn.execute(
                text(
                    "INSERT INTO roles (name, description, permissions, mcp_tools) "
                    "VALUES ('user', '', '[]', '[]')"
                )
            )
            await conn.execute(
                text(
                    "INSERT INTO users (id, name, role_name, active, created_at) "
                    "VALUES ('olga', 'olga', 'user', true, CURRENT_TIMESTAMP)"
                )
            )
    finally:
        await db.dispose()


def test_an_old_database_gets_the_column_and_its_users_generation_0(database_url: str) -> None:
    asyncio.run(_make_old(database_url))
    assert "token_generation" not in asyncio.run(user_columns(database_url))
    asyncio.run(_start(database_url))  # what OMNI2 does when it starts
    assert "token_generation" in asyncio.run(user_columns(database_url))

    admin = Admin(database_url)
    olga = admin(lambda s: users_repo.load_user(s, "olga"))
    assert olga is not None and olga.token_generation == 0  # NULL in the old row
    assert admin(lambda s: users_repo.login_record(s, "olga")) == (None, 0)
    assert admin(lambda s: users_repo.bump_token_generation(s, "olga")) == 1
    assert admin(lambda s: users_repo.token_states(s, ["olga", "nobody"])) == {"olga": (1, None)}


def test_a_logout_revokes_only_from_its_tokens_generation(database_url: str) -> None:
    asyncio.run(_start(database_url))
    admin = Admin(database_url)
    admin(lambda s: users_repo.add_user(s, "lena", "user"))
    assert admin(lambda s: users_repo.bump_token_generation(s, "lena", only_from=0)) == 1
    # The same token again (generation 0): revoked already, nothing changes.
    assert admin(lambda s: users_repo.bump_token_generation(s, "lena", only_from=0)) is None
    assert admin(lambda s: users_repo.login_record(s, "lena"))[1] == 1
    # A password change revokes too.
    admin(lambda s: users_repo.set_password_hash(s, "lena", None))
    assert admin(lambda s: users_repo.login_record(s, "lena"))[1] == 2
