"""The built-in roles, and the demo users OMNI2 adds at start (`OMNI2_SEED_DEMO_USERS`).

Rows are inserted when missing; existing rows are left as they are, except that a demo user
without a password (a database made before passwords were stored) gets its demo password.
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.common.passwords import hash_password
from services.db.engine import Database
from services.db.models import BlockedUser, Role, User
from services.db.repository.users import ALL_TOOLS

ROLES: list[Role] = [
    Role(
        name="admin",
        description="Everything, every tool, generous limits",
        permissions=["chat", "tools", "admin"],
        mcp_tools=[ALL_TOOLS],
        daily_token_limit=1_000_000,
        daily_cost_limit=100.0,
        rate_limit_per_minute=120,
    ),
    Role(
        name="user",
        description="Chat with the database tools",
        permissions=["chat", "tools"],
        mcp_tools=["database_query", "list_tables"],
        daily_token_limit=100_000,
        daily_cost_limit=5.0,
        rate_limit_per_minute=30,
    ),
    Role(
        name="viewer",
        description="Chat only, no tools",
        permissions=["chat"],
        mcp_tools=[],
        daily_token_limit=20_000,
        daily_cost_limit=1.0,
        rate_limit_per_minute=10,
    ),
]


@dataclass(frozen=True)
class DemoUser:
    id: str
    name: str
    role: str
    password: str  # the demo login at the dashboard; stored only as a hash
    active: bool = True
    blocked_reason: str | None = None
    daily_token_limit: int | None = None
    note: str = ""


# The demo passwords are public demo credentials, documented for the local stack (README,
# `omni-trace demo`, the tests): they are not secrets. Any database OMNI2 seeds lets these users
# log in, so a deployment turns seeding off (OMNI2_SEED_DEMO_USERS=false).
DEMO_USERS: list[DemoUser] = [
    DemoUser("alice", "Alice", "user", "alice-demo", note="normal user"),
    DemoUser("bob", "Bob", "admin", "bob-demo", note="admin"),
    DemoUser("carol", "Carol", "viewer", "carol-demo", note="chat only, no tools"),
    DemoUser(
        "mallory",
        "Mallory",
        "user",
        "mallory-demo",
        blocked_reason="abusive prompts reported by the security team",
        note="blocked",
    ),
    DemoUser("ivan", "Ivan", "user", "ivan-demo", active=False, note="inactive account"),
    DemoUser("tim", "Tim", "user", "tim-demo", daily_token_limit=120, note="tiny daily limit"),
]

# user -> demo password: what OMNI2 tells a harness through OMNI2_DEMO_USERS_FILE.
DEMO_PASSWORDS: dict[str, str] = {demo.id: demo.password for demo in DEMO_USERS}


def write_demo_users(path: Path) -> None:
    """The demo logins as JSON (user -> password), private to this user (0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(DEMO_PASSWORDS, out)


@functools.cache
def _demo_hash(password: str) -> str:
    # Salted once per process: seeding many test databases does not hash again each time.
    return hash_password(password)


async def seed_roles(db: Database) -> int:
    """Insert the built-in roles that are missing (never users); returns how many were added."""
    async with db.session() as session:
        return await _add_roles(session)


async def _add_roles(session: AsyncSession) -> int:
    added = 0
    have_roles = set((await session.scalars(select(Role.name))).all())
    for role in ROLES:
        if role.name not in have_roles:
            session.add(
                Role(
                    name=role.name,
                    description=role.description,
                    permissions=list(role.permissions),
                    mcp_tools=list(role.mcp_tools),
                    daily_token_limit=role.daily_token_limit,
                    daily_cost_limit=role.daily_cost_limit,
                    rate_limit_per_minute=role.rate_limit_per_minute,
                )
            )
            added += 1
    await session.flush()
    return added


async def seed_demo(db: Database) -> int:
    """Insert the built-in roles and the demo users that are missing; returns rows added."""
    async with db.session() as session:
        added = await _add_roles(session)
        rows = await session.execute(select(User.id, User.password_hash))
        have_users = {user_id: hashed for user_id, hashed in rows}
        for demo in DEMO_USERS:
            if demo.id in have_users:
                if have_users[demo.id] is None:
                    (await session.get_one(User, demo.id)).password_hash = _demo_hash(demo.password)
                continue
            session.add(
                User(
                    id=demo.id,
                    name=demo.name,
                    role_name=demo.role,
                    active=demo.active,
                    daily_token_limit=demo.daily_token_limit,
                    password_hash=_demo_hash(demo.password),
                )
            )
            await session.flush()
            if demo.blocked_reason:
                session.add(
                    BlockedUser(user_id=demo.id, reason=demo.blocked_reason, blocked_by="seed")
                )
            added += 1
    return added
