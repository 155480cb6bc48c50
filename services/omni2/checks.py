"""The checks OMNI2 runs before it lets a user in and before it answers a message.

The checks of one connection or message are one span (`checks`), and each check is an event
on it (`check <name>`, with its result, attributes and duration) and a flow event naming
that span: the same facts as a span per check, for the CPU of one. At connect: the user must
exist, be active and not be blocked, and have a connection slot left (else a 4xxx close with
the reason). Per message: still allowed (blocked now: `blocked` frame and close), the rate
limit and the daily usage limits (an `error` frame; the connection stays open). The message
limits are counted and reserved atomically in the database, so they hold across parallel
connections and OMNI2 processes.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

from opentelemetry.trace import Span, format_span_id
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from otel.names import Attr, Event, Flow, SpanName
from services.common.protocol import CloseCode
from services.common.refusal import Refusal
from services.db import Database
from services.db.engine import replica_of
from services.db.repository import slots as slots_repo
from services.db.repository import usage as usage_repo
from services.db.repository import users as users_repo
from services.db.repository.flow import FlowRecord
from services.db.repository.usage import Reservation
from services.db.repository.users import UserContext
from services.omni2.steps import Step, failures_recorded, tracer

log = logging.getLogger(__name__)


class Denied(Exception):
    """A message refused by a check. `close` set: the connection ends after the frame."""

    def __init__(
        self,
        check: str,
        message: str,
        error_type: str,
        *,
        frame: str = "error",
        close: CloseCode | None = None,
        retry_after_s: float = 0.0,
    ) -> None:
        super().__init__(message)
        self.check = check
        self.message = message
        self.error_type = error_type
        self.frame = frame
        self.close = close
        self.retry_after_s = retry_after_s  # > 0: every message until then is refused too


@dataclass
class CheckRun:
    """The checks of one connection or message: one span, a flow event per check.

    `traced` opens the span; each `check` inside it adds its event and flow event. The span
    carries `attributes` (what every span of the message carries) and the run's outcome: the
    result `pass`, or the result, name, error type and status of the check that denied, or
    the name, error type and status of one that failed (as `traced_step` records a failure).
    """

    attributes: dict[str, Any]
    flow: list[FlowRecord] = field(default_factory=list)
    _span: Span | None = field(default=None, init=False, repr=False)
    _span_id: str | None = field(default=None, init=False, repr=False)
    _result: str | None = field(default=None, init=False, repr=False)

    @contextmanager
    def traced(self) -> Iterator[Span]:
        """The run's span, current while its checks run. An exception raised between checks
        is the caller's to record (e.g. a revoked token at connect), not a check's. Inside a
        run's span already (a caller that holds it around the transaction), the same span."""
        if self._span is not None:
            yield self._span
            return
        with tracer.start_as_current_span(
            SpanName.CHECKS,
            attributes=self.attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            self._span, self._result = span, None
            self._span_id = format_span_id(span.get_span_context().span_id)
            try:
                yield span
            finally:
                self._span = None
                if self._result == "pass":
                    span.set_attribute(Attr.CHECK_RESULT, "pass")

    @contextmanager
    def check(self, name: str) -> Iterator[dict[str, Any]]:
        """One check: an event on the run's span and a flow event; Denied or Refusal from the
        body denies it. The body adds the check's own attributes (limits, role) to the dict
        it is given: they go on the event, where two checks' `chat.limit` do not collide."""
        span = self._span
        if span is None:
            raise RuntimeError(f"check {name!r} outside CheckRun.traced()")
        step = Step(span, FlowRecord(Flow.CHECK, name, "ok", span_id=self._span_id))
        self.flow.append(step.record)
        noted: dict[str, Any] = {}
        try:
            with failures_recorded(step, "check failed"):
                try:
                    yield noted
                except (Denied, Refusal) as denial:
                    reason = denial.message if isinstance(denial, Denied) else denial.reason
                    step.fail(denial.error_type, reason, status="denied", reason=reason)
                    noted[Attr.CHECK_RESULT] = "deny"
                    raise
                noted[Attr.CHECK_RESULT] = "pass"
        finally:
            self._end(name, step, noted)

    def _end(self, name: str, step: Step, noted: dict[str, Any]) -> None:
        """The check's event, and the run's outcome on the span when this check ended it."""
        span = step.span
        event = {Attr.CHECK_NAME: name, **noted, Attr.CHECK_DURATION: step.record.duration_ms}
        if step.failed:
            event[Attr.ERROR_TYPE] = step.record.detail["error_type"]
            # Step.fail put the error type and status on the span; it names the check too.
            span.set_attribute(Attr.CHECK_NAME, name)
            if Attr.CHECK_RESULT in noted:  # denied (a check that failed has no result)
                span.set_attribute(Attr.CHECK_RESULT, noted[Attr.CHECK_RESULT])
            self._result = noted.get(Attr.CHECK_RESULT, "error")
        elif self._result is None:
            self._result = "pass"
        span.add_event(Event.check(name), event)


async def check_connection(session: AsyncSession, run: CheckRun, user_id: str) -> UserContext:
    """The user's context, or Refusal (close code and reason) when they may not connect."""
    with run.check("user") as noted:
        user = await users_repo.load_user(session, user_id)
        if user is None:
            raise Refusal(CloseCode.USER_UNKNOWN, f"unknown user {user_id!r}", "unknown_user")
        noted[Attr.USER_ROLE] = user.role
        if not user.active:
            raise Refusal(CloseCode.FORBIDDEN, "account inactive", "user_inactive")
        if user.blocked_reason is not None:
            raise Refusal(
                CloseCode.USER_BLOCKED, f"user blocked: {user.blocked_reason}", "user_blocked"
            )
        return user


async def check_connections(
    run: CheckRun, user: UserContext, connections: ConnectionSlots, default_limit: int
) -> Slot:
    """Take one of the user's connection slots, or Refusal (4429) when all are open."""
    with run.check("connections") as noted:
        limit = user.max_connections if user.max_connections is not None else default_limit
        slot, used = await connections.acquire(user.user_id, limit)
        noted |= {Attr.LIMIT: limit, Attr.LIMIT_USED: used}
        if slot is None:
            raise Refusal(
                CloseCode.TOO_MANY_CONNECTIONS,
                f"too many connections: {limit} already open for this user",
                "too_many_connections",
            )
        return slot


class Slot(Protocol):
    """One open connection's place in its user's limit, given back when it closes."""

    async def release(self) -> None: ...


class ConnectionSlots(Protocol):
    async def acquire(self, user_id: str, limit: int) -> tuple[Slot | None, int]:
        """(the slot, or None at the limit; how many were open before)."""
        ...


@dataclass
class _CountedSlot:
    counts: ConnectionCount
    user_id: str
    released: bool = False

    async def release(self) -> None:
        if not self.released:
            self.released = True
            self.counts.release(self.user_id)


class ConnectionCount:
    """Open connections per user in this OMNI2 process (OMNI2_CONNECTION_SLOTS=process: one
    replica holds every connection). Replicas share the count through the database instead
    (SharedConnectionSlots)."""

    def __init__(self) -> None:
        self._open: dict[str, int] = {}

    def open(self, user_id: str) -> int:
        return self._open.get(user_id, 0)

    async def acquire(self, user_id: str, limit: int) -> tuple[Slot | None, int]:
        # No await between the read and the write: the event loop makes this atomic.
        used = self.open(user_id)
        if used >= limit:
            return None, used
        self._open[user_id] = used + 1
        return _CountedSlot(self, user_id), used

    def release(self, user_id: str) -> None:
        left = self.open(user_id) - 1
        if left > 0:
            self._open[user_id] = left
        else:
            self._open.pop(user_id, None)


@dataclass
class _SharedSlot:
    slots: SharedConnectionSlots
    slot_id: str
    released: bool = False

    async def release(self) -> None:
        if self.released:
            return
        self.released = True
        try:
            await self.slots.free(self.slot_id)
        except (SQLAlchemyError, OSError) as err:
            # No longer refreshed: the row stops counting after stale_after_s.
            log.warning("could not free connection slot %s: %s", self.slot_id, err)


class SharedConnectionSlots:
    """Open connections per user across OMNI2 replicas: a row per connection in the database,
    taken atomically under the user's lock row. Each replica refreshes its rows (`refresh`,
    every `stale_after_s` / 3); the rows of a replica that died stop counting after
    `stale_after_s`. `clock` gives epoch seconds (a test's clock steps past staleness)."""

    def __init__(
        self,
        db: Database,
        replica: str,
        stale_after_s: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db, self.replica, self.stale_after_s, self.clock = db, replica, stale_after_s, clock
        # Only these are refreshed: a slot whose row could not be deleted still expires.
        self._open: set[str] = set()

    async def acquire(self, user_id: str, limit: int) -> tuple[Slot | None, int]:
        slot_id = str(uuid.uuid4())
        async with self.db.session() as session:
            taken, used = await slots_repo.take_connection_slot(
                session, user_id, limit, (slot_id, self.replica), self.clock(), self.stale_after_s
            )
        if not taken:
            return None, used
        self._open.add(slot_id)
        return _SharedSlot(self, slot_id), used

    async def free(self, slot_id: str) -> None:
        self._open.discard(slot_id)
        async with self.db.session() as session:
            await slots_repo.free_connection_slot(session, slot_id)

    async def refresh(self) -> None:
        async with self.db.session() as session:
            await slots_repo.refresh_connection_slots(session, sorted(self._open), self.clock())


@dataclass(frozen=True)
class UsagePolicy:
    """How a message reserves its share of the daily limits (from OMNI2's settings)."""

    warning_ratio: float
    reserve_tokens: int
    reserve_cost: float


@dataclass(frozen=True)
class Allowance:
    user: UserContext
    warnings: tuple[str, ...]
    reservation: Reservation


async def check_message(
    session: AsyncSession, run: CheckRun, user_id: str, policy: UsagePolicy
) -> Allowance:
    """Raise Denied unless the user may send this message now.

    Run in one transaction: the rate window and the usage reservation it writes are kept only
    when every check passes (a Denied rolls the transaction back)."""
    with run.traced():
        return await _message_checks(session, run, user_id, policy)


async def _message_checks(
    session: AsyncSession, run: CheckRun, user_id: str, policy: UsagePolicy
) -> Allowance:
    with run.check("user") as noted:
        user = await users_repo.load_user(session, user_id)
        if user is None:
            raise Denied(
                "user", "user no longer exists", "unknown_user", close=CloseCode.USER_UNKNOWN
            )
        noted[Attr.USER_ROLE] = user.role
        if user.blocked_reason is not None:
            raise Denied(
                "user",
                f"user blocked: {user.blocked_reason}",
                "user_blocked",
                frame="blocked",
                close=CloseCode.USER_BLOCKED,
            )
        if not user.active:
            raise Denied(
                "user",
                "account inactive",
                "user_inactive",
                frame="blocked",
                close=CloseCode.FORBIDDEN,
            )
        if not user.may("chat"):
            raise Denied("user", "your role may not chat", "permission_denied")

    with run.check("rate_limit") as noted:
        limit = user.rate_limit_per_minute
        if limit is not None:
            rate = await usage_repo.accept_within_rate(session, user_id, limit, time.time())
            noted |= {Attr.LIMIT: limit, Attr.LIMIT_USED: rate.recent}
            if not rate.accepted:
                raise Denied(
                    "rate_limit",
                    f"Rate limit exceeded: {limit} messages per minute",
                    "rate_limited",
                    retry_after_s=rate.retry_after_s,
                )

    with run.check("usage") as noted:
        usage = await usage_repo.reserve_usage(
            session,
            user_id,
            usage_repo.today(),
            tokens=policy.reserve_tokens,
            cost=policy.reserve_cost,
            token_limit=user.daily_token_limit,
            cost_limit=user.daily_cost_limit,
            owner=replica_of(session),  # replicas: whose answer holds the reservation
        )
        day = usage.before
        noted |= {
            Attr.LIMIT_USED: day.tokens,
            Attr.LIMIT_RESERVED: day.reserved_tokens,
            Attr.USAGE_COST: day.cost,
        }
        if user.daily_token_limit is not None:
            noted[Attr.LIMIT] = user.daily_token_limit
        if usage.reservation is None:
            raise _usage_denied(user, day)
        return Allowance(user, _warnings(user, day, policy.warning_ratio), usage.reservation)


def _usage_denied(user: UserContext, day: usage_repo.DayUsage) -> Denied:
    tokens, cost = user.daily_token_limit, user.daily_cost_limit
    if tokens is not None and day.tokens >= tokens:
        return Denied(
            "usage",
            f"Daily limit exceeded: {day.tokens} of {tokens} tokens used today",
            "daily_limit_exceeded",
        )
    if cost is not None and day.cost >= cost:
        return Denied(
            "usage",
            f"Daily limit exceeded: {money(day.cost)} of {money(cost)} spent today",
            "daily_limit_exceeded",
        )
    # Not used up, but what is left is reserved by this user's answers still in progress.
    return Denied(
        "usage",
        "Daily limit reached with answers in progress: the rest of today's allowance is "
        "reserved by your other messages; send again when they are answered",
        "usage_reserved",
    )


def _warnings(user: UserContext, day: usage_repo.DayUsage, ratio: float) -> tuple[str, ...]:
    warnings: list[str] = []
    if user.daily_token_limit is not None and day.tokens >= ratio * user.daily_token_limit:
        warnings.append(f"You have used {day.tokens} of your {user.daily_token_limit} daily tokens")
    if user.daily_cost_limit is not None and day.cost >= ratio * user.daily_cost_limit:
        warnings.append(
            f"You have spent {money(day.cost)} of your {money(user.daily_cost_limit)} daily budget"
        )
    return tuple(warnings)


def money(amount: float) -> str:
    """Dollars with as many decimals as small amounts need: $5.00, $0.000123."""
    return f"${amount:.2f}" if amount >= 0.01 or amount == 0 else f"${amount:.6f}"
