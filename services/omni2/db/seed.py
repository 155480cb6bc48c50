"""Demo roles and users, inserted when missing (existing rows are left as they are)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select

from services.omni2.db.engine import Database
from services.omni2.db.models import BlockedUser, Role, User

ALL_TOOLS = "*"

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
    password: str  # the dashboard's demo login (services/dashboard/users.py)
    active: bool = True
    blocked_reason: str | None = None
    daily_token_limit: int | None = None
    note: str = ""


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


async def seed_demo(db: Database) -> int:
    """Insert the demo roles and users that are missing; returns how many rows were added."""
    added = 0
    async with db.session() as session:
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
        have_users = set((await session.scalars(select(User.id))).all())
        for demo in DEMO_USERS:
            if demo.id in have_users:
                continue
            session.add(
                User(
                    id=demo.id,
                    name=demo.name,
                    role_name=demo.role,
                    active=demo.active,
                    daily_token_limit=demo.daily_token_limit,
                )
            )
            await session.flush()
            if demo.blocked_reason:
                session.add(
                    BlockedUser(user_id=demo.id, reason=demo.blocked_reason, blocked_by="seed")
                )
            added += 1
    return added
