"""The database OMNI2 and the dashboard share: users, roles and limits; conversations,
messages, usage and flow events; connection slots and failed logins.

SQLAlchemy 2 (async): SQLite through aiosqlite by default, PostgreSQL through asyncpg. One
`Database` (one engine) per process; OMNI2 creates and upgrades the tables (upgrade.py) and
seeds the built-in roles and demo users (seed.py); the queries are in repository/, one module
per table group.
"""

from services.db.engine import DEFAULT_DATABASE_URL, Database
from services.db.models import (
    Base,
    BlockedUser,
    ConnectionSlot,
    Conversation,
    DailyUsage,
    FlowEvent,
    LoginFailures,
    Message,
    RateWindow,
    ReplicaHeartbeat,
    Role,
    Usage,
    UsageReservation,
    User,
)

__all__ = [
    "DEFAULT_DATABASE_URL",
    "Base",
    "BlockedUser",
    "ConnectionSlot",
    "Conversation",
    "DailyUsage",
    "Database",
    "FlowEvent",
    "LoginFailures",
    "Message",
    "RateWindow",
    "ReplicaHeartbeat",
    "Role",
    "Usage",
    "UsageReservation",
    "User",
]
