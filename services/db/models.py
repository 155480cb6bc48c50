"""Tables. Every audit row (message, usage, flow event) carries the trace id of its message."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class Role(Base):
    """What a role may do: permissions, MCP tools, and default limits for its users."""

    __tablename__ = "roles"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    description: Mapped[str] = mapped_column(String(200), default="")
    # e.g. ["chat", "tools"]; a user without "chat" cannot send messages.
    permissions: Mapped[list[str]] = mapped_column(JSON, default=list)
    # MCP tool names this role may call; ["*"] means every tool the server offers.
    mcp_tools: Mapped[list[str]] = mapped_column(JSON, default=list)
    daily_token_limit: Mapped[int | None] = mapped_column(Integer, nullable=True)
    daily_cost_limit: Mapped[float | None] = mapped_column(Float, nullable=True)
    rate_limit_per_minute: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # Open chat connections per user; NULL: OMNI2's setting (OMNI2_MAX_CONNECTIONS_PER_USER).
    max_connections: Mapped[int | None] = mapped_column(Integer, nullable=True)


class User(Base):
    """A user known to OMNI2. Limits set here override the role's; NULL means the role's."""

    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)  # the JWT subject
    name: Mapped[str] = mapped_column(String(200), default="")
    role_name: Mapped[str] = mapped_column(ForeignKey("roles.name"))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    daily_token_limit: Mapped[int | None] = mapped_column(Integer, nullable=True)
    daily_cost_limit: Mapped[float | None] = mapped_column(Float, nullable=True)
    rate_limit_per_minute: Mapped[int | None] = mapped_column(Integer, nullable=True)
    max_connections: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # The dashboard's login: an Argon2id hash (services/common/passwords.py); NULL: no password,
    # the user cannot log in until `omni-trace users passwd` sets one.
    password_hash: Mapped[str | None] = mapped_column(
        String(255), nullable=True, default=None, deferred=True
    )
    # Raised by logout, a password change and a block: a token carries the generation it was
    # issued in, and one of an older generation is refused. Nullable (NULL: 0) so that an
    # existing database gets the column (db/upgrade.py).
    token_generation: Mapped[int | None] = mapped_column(Integer, nullable=True, default=0)

    role: Mapped[Role] = relationship(lazy="joined")
    block: Mapped[BlockedUser | None] = relationship(lazy="joined", uselist=False)


class BlockedUser(Base):
    __tablename__ = "blocked_users"

    user_id: Mapped[str] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    reason: Mapped[str] = mapped_column(String(500))
    blocked_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    blocked_by: Mapped[str] = mapped_column(String(128), default="")


class Conversation(Base):
    __tablename__ = "conversations"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    trace_id: Mapped[str] = mapped_column(String(32))  # the connection's session trace
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Message(Base):
    __tablename__ = "messages"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    conversation_id: Mapped[str] = mapped_column(ForeignKey("conversations.id"), index=True)
    user_id: Mapped[str] = mapped_column(String(128), index=True)
    role: Mapped[str] = mapped_column(String(16))  # "user" or "assistant"
    content: Mapped[str] = mapped_column(Text)
    trace_id: Mapped[str] = mapped_column(String(32), index=True)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, index=True
    )


class Usage(Base):
    """Tokens and cost of one answered message; the daily limits sum these rows."""

    __tablename__ = "usage"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(String(128), index=True)
    conversation_id: Mapped[str] = mapped_column(ForeignKey("conversations.id"))
    provider: Mapped[str] = mapped_column(String(64))
    model: Mapped[str] = mapped_column(String(128))
    tokens_input: Mapped[int] = mapped_column(Integer, default=0)
    tokens_output: Mapped[int] = mapped_column(Integer, default=0)
    cost: Mapped[float] = mapped_column(Float, default=0.0)
    trace_id: Mapped[str] = mapped_column(String(32), index=True)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, index=True
    )


class FlowEvent(Base):
    """One step of a message's flow (a check, the model call, a tool call, an error)."""

    __tablename__ = "flow_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    conversation_id: Mapped[str | None] = mapped_column(String(64), index=True, nullable=True)
    user_id: Mapped[str] = mapped_column(String(128), index=True)
    trace_id: Mapped[str] = mapped_column(String(32), index=True)
    span_id: Mapped[str | None] = mapped_column(String(16), nullable=True)
    seq: Mapped[int] = mapped_column(Integer, default=0)  # order within the message
    kind: Mapped[str] = mapped_column(String(32))  # check, model_call, tool_call, error, connect
    name: Mapped[str] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(16))  # ok, denied, error
    duration_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


# -- limits that hold across parallel connections ---------------------------------------------


class DailyUsage(Base):
    """A user's usage of one UTC day, and what answers in progress have reserved of it.

    The daily limits are checked and reserved against this one row in one statement, so
    parallel connections cannot pass them together, and the check costs the same however much
    history is stored. `tokens`/`cost` are the sum of that day's `usage` rows."""

    __tablename__ = "usage_daily"

    user_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    tokens: Mapped[int] = mapped_column(Integer, default=0)
    cost: Mapped[float] = mapped_column(Float, default=0.0)
    reserved_tokens: Mapped[int] = mapped_column(Integer, default=0)
    reserved_cost: Mapped[float] = mapped_column(Float, default=0.0)


class RateWindow(Base):
    """A user's rate-limit window: when their last accepted messages were accepted.

    Also the user's lock row: a message check updates it first, so the checks of one user's
    parallel connections run one after another (row lock on PostgreSQL, the write lock on
    SQLite). Holds at most the limit's number of times, whatever the history."""

    __tablename__ = "rate_windows"

    user_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    accepted: Mapped[list[float]] = mapped_column(JSON, default=list)  # epoch seconds
    checked_at: Mapped[float] = mapped_column(Float, default=0.0)


class ConnectionSlot(Base):
    """An open chat connection, for OMNI2 replicas that share the per-user connection limit
    (OMNI2_CONNECTION_SLOTS=database). Its replica refreshes `seen_at` while it runs; a slot
    not seen for a while belongs to a replica that is gone and no longer counts."""

    __tablename__ = "connection_slots"

    slot_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(128), index=True)
    replica: Mapped[str] = mapped_column(String(64), index=True)
    seen_at: Mapped[float] = mapped_column(Float)  # epoch seconds


class UsageReservation(Base):
    """One accepted message's reservation of its user's day, owned by the OMNI2 replica that
    answers it (replicas only: a single OMNI2 writes none). `usage_daily` holds the sum, which
    the limits check in one statement; these rows say whose each part is, so that a replica
    that starts releases only what it left itself, and a dead replica's part is released by
    the others. The row goes when its message's usage is saved."""

    __tablename__ = "usage_reservations"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(128))
    day: Mapped[date] = mapped_column(Date)
    replica: Mapped[str] = mapped_column(String(64), index=True)
    tokens: Mapped[int] = mapped_column(Integer)
    cost: Mapped[float] = mapped_column(Float)
    reserved_at: Mapped[float] = mapped_column(Float)  # epoch seconds, for whoever looks


class ReplicaHeartbeat(Base):
    """When each OMNI2 replica last said it runs. A replica not seen for a while is gone, and
    its usage reservations are released by the replicas still running."""

    __tablename__ = "replica_heartbeats"

    replica: Mapped[str] = mapped_column(String(64), primary_key=True)
    seen_at: Mapped[float] = mapped_column(Float)  # epoch seconds


class LoginFailures(Base):
    """The dashboard's failed logins of one user name or client address, in a sliding window
    (DASHBOARD_LOGIN_LIMITS=database: every dashboard replica counts in these rows). OMNI2
    creates the table like every other; the dashboard only reads and writes rows. The row is
    also the key's lock: an attempt updates it first, so parallel attempts take turns."""

    __tablename__ = "login_failures"

    scope: Mapped[str] = mapped_column(String(16), primary_key=True)  # "user" or "address"
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    failures: Mapped[list[float]] = mapped_column(JSON, default=list)  # epoch seconds
    # The newest failure: the least recently failed keys go first when the table is full.
    last_failed: Mapped[float] = mapped_column(Float, default=0.0)

    __table_args__ = (Index("ix_login_failures_scope_last_failed", "scope", "last_failed"),)
