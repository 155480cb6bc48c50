"""What one user's churn may cost everyone's audit trail.

Jaeger's memory store evicts whole traces, oldest first, past its size; a user who could make
a trace per connect and per refused message (about 100 a second) would push every other
user's traces out within minutes. So the first hop we run (the dashboard, or OMNI2 for a
client that reaches it without one) bounds what one user can make:

- `ConnectRate`: connects per user (or per address, for a connect without a valid token),
  a token bucket; one more is refused with 4429 and a reason.
- `RefusalLedger`: a per-user budget of refusals traced one by one (connects over the rate,
  messages over the pending cap); past it, a refusal is counted, and the counts of each user
  are written as one `chat.refused` span per `flush_s` seconds (a trace of its own, with
  `user.id` and the counts).
- `Holds`: a message the rate limit refused says when the next one may pass (`retry_after_s`);
  until then the first hop answers the user's messages itself with the same refusal, counted
  on the connection's `chat.refused` span, instead of a message trace each.

Per process and bounded: each remembers at most `max_keys` users, least recently seen
dropped first (a dropped user starts with a full bucket, which costs at most one burst).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode

from otel.names import Attr, SpanName
from services.common.protocol import CloseCode, Refusal
from services.common.settings import ChurnLimits

log = logging.getLogger(__name__)
tracer = trace.get_tracer(__name__)

MAX_KEYS = 65_536
Clock = Callable[[], float]


class _Buckets:
    """A token bucket per key (`per_minute` refill, `burst` capacity), bounded in keys."""

    def __init__(self, per_minute: float, burst: int, clock: Clock, max_keys: int) -> None:
        self.per_s, self.burst, self._clock, self._max = per_minute / 60.0, burst, clock, max_keys
        self._state: OrderedDict[str, tuple[float, float]] = OrderedDict()  # tokens, at

    def take(self, key: str) -> bool:
        now = self._clock()
        tokens, at = self._state.pop(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - at) * self.per_s)
        allowed = tokens >= 1.0
        self._state[key] = (tokens - 1.0 if allowed else tokens, now)
        if len(self._state) > self._max:
            self._state.popitem(last=False)
        return allowed


class ConnectRate:
    def __init__(
        self,
        per_minute: float,
        burst: int,
        clock: Clock = time.monotonic,
        max_keys: int = MAX_KEYS,
    ) -> None:
        self._buckets = _Buckets(per_minute, burst, clock, max_keys)
        self.reason = f"too many connections: at most {per_minute:g} a minute ({burst} at once)"

    def allow(self, key: str) -> bool:
        return self._buckets.take(key)


@dataclass
class _Count:
    first_ns: int
    connects: int = 0
    messages: int = 0


@dataclass
class RefusalLedger:
    """Which refusals are traced one by one, and the counts of the rest."""

    per_minute: float
    burst: int
    flush_s: float
    clock: Clock = time.monotonic
    max_keys: int = MAX_KEYS
    _budget: _Buckets = field(init=False)
    _counts: dict[str, _Count] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        self._budget = _Buckets(self.per_minute, self.burst, self.clock, self.max_keys)

    def traced(self, user: str, *, connect: bool = False) -> bool:
        """True: trace this refusal (a connect, or a message) as usual. False: it was counted
        instead, for the user's next `chat.refused` span."""
        if self._budget.take(user):
            return True
        self.count(user, connects=int(connect), messages=int(not connect))
        return False

    def count(self, user: str, *, connects: int = 0, messages: int = 0) -> None:
        if user not in self._counts and len(self._counts) >= self.max_keys:
            self.flush()  # bounded: write what is held rather than forget it
        entry = self._counts.setdefault(user, _Count(time.time_ns()))
        entry.connects += connects
        entry.messages += messages

    def flush(self) -> int:
        """One `chat.refused` span per user with counts; returns how many were written."""
        counts, self._counts = self._counts, {}
        for user, entry in counts.items():
            attributes: dict[str, Any] = {
                Attr.USER_ID: user,
                Attr.CONNECTS_REFUSED: entry.connects,
                Attr.MESSAGES_REFUSED: entry.messages,
                Attr.ERROR_TYPE: "refusals_counted",
            }
            span = tracer.start_span(
                SpanName.REFUSED,
                context=trace.set_span_in_context(trace.INVALID_SPAN),  # a trace of its own
                attributes=attributes,
                start_time=entry.first_ns,
            )
            span.set_status(Status(StatusCode.ERROR, "refusals past the trace budget, counted"))
            span.end()
            log.warning(
                "refused user %s: %d connects, %d messages (counted, past the trace budget)",
                user,
                entry.connects,
                entry.messages,
            )
        return len(counts)

    async def run(self) -> None:
        """Flush every `flush_s` seconds until cancelled (then once more)."""
        try:
            while True:
                await asyncio.sleep(self.flush_s)
                self.flush()
        finally:
            self.flush()


@dataclass(frozen=True)
class Hold:
    until: float  # the clock's time until which the user's messages are refused
    frame: dict[str, Any]  # the refusal to answer them with


class Holds:
    """Users whose messages the rate limit refuses until a known time."""

    def __init__(self, clock: Clock = time.monotonic, max_keys: int = MAX_KEYS) -> None:
        self._clock, self._max = clock, max_keys
        self._held: OrderedDict[str, Hold] = OrderedDict()

    def hold(self, user: str, retry_after_s: float, frame: dict[str, Any]) -> None:
        if not retry_after_s > 0:
            return
        until = self._clock() + min(retry_after_s, 3600.0)
        refusal = {k: v for k, v in frame.items() if k != "trace_id"}
        self._held.pop(user, None)
        self._held[user] = Hold(until, refusal)
        if len(self._held) > self._max:
            self._held.popitem(last=False)

    def refusal(self, user: str) -> dict[str, Any] | None:
        """The frame to refuse the user's message with now, or None to let it pass."""
        held = self._held.get(user)
        if held is None:
            return None
        left = held.until - self._clock()
        if left <= 0:
            del self._held[user]
            return None
        return held.frame | {"retry_after_s": round(left, 1)}


def retry_after(frame: dict[str, Any]) -> float:
    """The `retry_after_s` seconds of a refusal frame (0 when it has none or it is not a number)."""
    value = frame.get("retry_after_s")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return 0.0
    return float(value) if value == value else 0.0  # NaN is no time


@dataclass(frozen=True)
class ConnectRefused:
    refusal: Refusal
    traced: bool  # False: counted on the user's next `chat.refused` span instead


@dataclass
class Churn:
    """A first hop's churn limits, shared by all its connections."""

    connects: ConnectRate
    refusals: RefusalLedger
    holds: Holds

    def check_connect(self, key: str) -> ConnectRefused | None:
        """None: the connect may go on; else how it is refused (4429) and whether traced."""
        if self.connects.allow(key):
            return None
        refusal = Refusal(
            CloseCode.TOO_MANY_CONNECTIONS, self.connects.reason, "connect_rate_exceeded"
        )
        return ConnectRefused(refusal, self.refusals.traced(key, connect=True))

    @classmethod
    def of(cls, settings: ChurnLimits) -> Churn:
        return cls(
            ConnectRate(settings.connects_per_minute, settings.connect_burst),
            RefusalLedger(
                settings.traced_refusals_per_minute,
                settings.traced_refusal_burst,
                settings.refusal_flush_s,
            ),
            Holds(),
        )
