"""The checks OMNI2 runs before it lets a user in and before it answers a message.

Each check is one span (`check <name>`) and one flow event. At connect: the user must exist,
be active and not be blocked (else a 4xxx close with the reason). Per message: still allowed
(blocked now: `blocked` frame and close), the rate limit and the daily usage limits (an
`error` frame; the connection stays open).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Span, Status, StatusCode, format_span_id
from sqlalchemy.ext.asyncio import AsyncSession

from otel.names import Attr, Flow, SpanName
from services.common.protocol import CloseCode
from services.common.refusal import Refusal
from services.omni2.db import repository as repo
from services.omni2.db.repository import FlowRecord, UserContext

tracer = trace.get_tracer(__name__)


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
    ) -> None:
        super().__init__(message)
        self.check = check
        self.message = message
        self.error_type = error_type
        self.frame = frame
        self.close = close


@dataclass
class CheckRun:
    """The flow events of the checks of one connection or message."""

    attributes: dict[str, Any]
    flow: list[FlowRecord] = field(default_factory=list)

    @contextmanager
    def check(self, name: str) -> Iterator[Span]:
        started = time.perf_counter()
        with tracer.start_as_current_span(
            SpanName.check(name),
            attributes=self.attributes | {Attr.CHECK_NAME: name},
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            record = FlowRecord(Flow.CHECK, name, "ok", span_id=_span_id(span))
            try:
                yield span
            except (Denied, Refusal) as denial:
                error_type = denial.error_type
                reason = denial.message if isinstance(denial, Denied) else denial.reason
                span.set_attributes({Attr.CHECK_RESULT: "deny", Attr.ERROR_TYPE: error_type})
                span.set_status(Status(StatusCode.ERROR, reason))
                record.status = "denied"
                record.detail = {"error_type": error_type, "reason": reason}
                raise
            except Exception as err:  # the check could not run (e.g. database unavailable)
                span.set_attribute(Attr.ERROR_TYPE, type(err).__name__)
                span.set_status(Status(StatusCode.ERROR, "check failed"))
                record.status = "error"
                record.detail = {"error_type": type(err).__name__}
                raise
            else:
                span.set_attribute(Attr.CHECK_RESULT, "pass")
            finally:
                record.duration_ms = (time.perf_counter() - started) * 1000
                self.flow.append(record)


def _span_id(span: Span) -> str:
    return format_span_id(span.get_span_context().span_id)


async def check_connection(session: AsyncSession, run: CheckRun, user_id: str) -> UserContext:
    """The user's context, or Refusal (close code and reason) when they may not connect."""
    with run.check("user") as span:
        user = await repo.load_user(session, user_id)
        if user is None:
            raise Refusal(CloseCode.USER_UNKNOWN, f"unknown user {user_id!r}", "unknown_user")
        span.set_attribute(Attr.USER_ROLE, user.role)
        if not user.active:
            raise Refusal(CloseCode.FORBIDDEN, "account inactive", "user_inactive")
        if user.blocked_reason is not None:
            raise Refusal(
                CloseCode.USER_BLOCKED, f"user blocked: {user.blocked_reason}", "user_blocked"
            )
        return user


@dataclass(frozen=True)
class Allowance:
    user: UserContext
    warnings: tuple[str, ...]


async def check_message(
    session: AsyncSession, run: CheckRun, user_id: str, warning_ratio: float
) -> Allowance:
    """Raise Denied unless the user may send this message now."""
    with run.check("user") as span:
        user = await repo.load_user(session, user_id)
        if user is None:
            raise Denied(
                "user", "user no longer exists", "unknown_user", close=CloseCode.USER_UNKNOWN
            )
        span.set_attribute(Attr.USER_ROLE, user.role)
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

    with run.check("rate_limit") as span:
        limit = user.rate_limit_per_minute
        if limit is not None:
            recent = await repo.messages_since(session, user_id, repo.minute_ago())
            span.set_attributes({Attr.LIMIT: limit, Attr.LIMIT_USED: recent})
            if recent >= limit:
                raise Denied(
                    "rate_limit",
                    f"Rate limit exceeded: {limit} messages per minute",
                    "rate_limited",
                )

    warnings: list[str] = []
    with run.check("usage") as span:
        tokens, cost = await repo.usage_since(session, user_id, repo.start_of_day())
        span.set_attributes({Attr.LIMIT_USED: tokens, Attr.USAGE_COST: cost})
        if user.daily_token_limit is not None:
            span.set_attribute(Attr.LIMIT, user.daily_token_limit)
            if tokens >= user.daily_token_limit:
                raise Denied(
                    "usage",
                    f"Daily limit exceeded: {tokens} of {user.daily_token_limit} tokens used today",
                    "daily_limit_exceeded",
                )
            if tokens >= warning_ratio * user.daily_token_limit:
                warnings.append(
                    f"You have used {tokens} of your {user.daily_token_limit} daily tokens"
                )
        if user.daily_cost_limit is not None:
            if cost >= user.daily_cost_limit:
                raise Denied(
                    "usage",
                    f"Daily limit exceeded: {money(cost)} of {money(user.daily_cost_limit)} "
                    "spent today",
                    "daily_limit_exceeded",
                )
            if cost >= warning_ratio * user.daily_cost_limit:
                warnings.append(
                    f"You have spent {money(cost)} of your {money(user.daily_cost_limit)} "
                    "daily budget"
                )
    return Allowance(user, tuple(warnings))


def money(amount: float) -> str:
    """Dollars with as many decimals as small amounts need: $5.00, $0.000123."""
    return f"${amount:.2f}" if amount >= 0.01 or amount == 0 else f"${amount:.6f}"
