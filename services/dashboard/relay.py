"""What the dashboard checks of the messages it relays; their tracing is otel.websocket's.

Every relayed message is one `chat.relay` span, started by the tracing middleware as the
frame goes upstream (the proxy role's `message_at="forward"`). Before that the dashboard
may answer a message itself: while OMNI2's rate limit holds its user (untraced: OMNI2's
refusal, repeated), or past the cap on messages awaiting an answer (a message trace of its
own, within the user's refusal budget; counted past it).
"""

from __future__ import annotations

import asyncio
from typing import Any

from opentelemetry.trace import Status, StatusCode, format_trace_id

from otel.names import Attr
from otel.websocket import ConnectionTrace
from otel.websocket.codec import OMNI2
from services.common.churn import Churn, retry_after
from services.common.protocol import error_frame, json_object


class MessageRefused(Exception):
    """A message the dashboard answers itself; `frame` is the `error` frame to send."""

    def __init__(self, frame: dict[str, Any], trace_id: str) -> None:
        super().__init__(frame["error"])
        self.frame = frame
        self.trace_id = trace_id


class MessageHeld(Exception):
    """A message while OMNI2's rate limit holds its user: `frame` is that refusal, answered by
    the dashboard without relaying it (OMNI2 said until when it refuses them)."""

    def __init__(self, frame: dict[str, Any]) -> None:
        super().__init__(frame.get("error"))
        self.frame = frame


class MessageGate:
    """One connection's checks on the client's messages and OMNI2's refusals."""

    def __init__(
        self, connection: ConnectionTrace | None, *, max_pending: int, churn: Churn, user: str
    ) -> None:
        self._connection = connection
        self._max_pending = max_pending
        self._churn, self._user = churn, user

    def check(self, text: str) -> None:
        """Raise MessageHeld or MessageRefused for a message frame not to relay."""
        frame = json_object(text)
        if frame is None or OMNI2.kind(frame) not in OMNI2.opens:
            return
        if held := self._churn.holds.refusal(self._user):
            raise MessageHeld(held)
        connection = self._connection
        if connection is not None and len(connection.pending) >= self._max_pending:
            self._refuse_pending(connection, frame)

    def _refuse_pending(self, connection: ConnectionTrace, frame: dict[str, Any]) -> None:
        """Its own trace within the user's refusal budget, else counted (a client that keeps
        sending past the cap cannot make a trace a message)."""
        reason = f"too many messages awaiting an answer (at most {self._max_pending})"
        if not self._churn.refusals.traced(self._user):
            raise MessageRefused(error_frame(reason, None, "too_many_pending"), "")
        span = connection.message_span(frame)
        span.set_attribute(Attr.ERROR_TYPE, "too_many_pending")
        span.set_status(Status(StatusCode.ERROR, reason))
        span.end()
        trace_id = format_trace_id(span.get_span_context().trace_id)
        raise MessageRefused(error_frame(reason, trace_id, "too_many_pending"), trace_id)

    def observe(self, text: str) -> None:
        """A frame from OMNI2: a refusal that says until when it refuses the user holds the
        user's next messages here. Token frames, most of them, are not parsed."""
        if OMNI2.is_stream_text(text) or "retry_after_s" not in text:
            return
        frame = json_object(text)
        if frame is not None and OMNI2.kind(frame) in OMNI2.fails:
            self._churn.holds.hold(self._user, retry_after(frame), frame)


class RelayStall:
    """Fault injection (DASHBOARD_RELAY_STALL_MS; off unless set): once per message, hold the
    stream for `stall_ms` before forwarding the token frame after the `after`-th, really, so
    the dashboard's own gap between token frames shows the stall and OMNI2's does not (for
    drills and the tests of the audit's stall verdict). One per connection."""

    def __init__(self, stall_ms: float, after: int) -> None:
        self._seconds = stall_ms / 1000
        self._after = after
        self._tokens = 0  # token frames of the message being answered

    async def before_forwarding(self, text: str) -> None:
        if OMNI2.is_stream_text(text):
            await self._token()
            return
        frame = json_object(text)
        kind = OMNI2.kind(frame) if frame is not None else None
        if kind in OMNI2.streams:  # a token frame written another way: parsed, still counted
            await self._token()
        elif kind in OMNI2.ends:
            self._tokens = 0  # the next message is held once too

    async def _token(self) -> None:
        self._tokens += 1
        if self._tokens == self._after + 1:
            await asyncio.sleep(self._seconds)
