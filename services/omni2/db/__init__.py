"""OMNI2's database: users, roles and limits; conversations, messages, usage and flow events.

SQLAlchemy 2 (async): SQLite through aiosqlite by default, PostgreSQL through asyncpg.
"""

from services.omni2.db.engine import Database
from services.omni2.db.models import (
    Base,
    BlockedUser,
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
    "Base",
    "BlockedUser",
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
