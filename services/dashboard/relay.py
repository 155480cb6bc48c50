"""Message tracing inside the proxy: one `chat.relay` span per message frame.

Client frames of type `message` get a span that continues the frame's context (or links to
it, in `link` mode) and links to the connection's `upstream connect` span; the frame is
rewritten to carry the relay span to OMNI2. The span ends on the `done`/`error`/`blocked`
frame with the same trace id. Every span carries the connection's sampling decision.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Link, Span, SpanContext, SpanKind, Status, StatusCode

from otel.metrics import chat_metrics
from otel.names import Attr, Event, LinkRole, SpanName
from otel.propagation import FRAME_TRACE_KEY, TraceIds, client_parent, inject_frame
from otel.websocket.codec import OMNI2
from services.common.churn import Churn, retry_after
from services.common.protocol import (
    FAILED_FRAMES,
    FINAL_FRAMES,
    error_frame,
    json_object,
)

tracer = trace.get_tracer(__name__)


@dataclass
class _Pending:
    trace_id: int
    span: Span
    token_frames: int = 0
    # Monotonic, and taken even when the span is not recorded: the metric sees every message.
    started: float = field(default_factory=time.perf_counter)


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


class MessageRelay:
    def __init__(
        self,
        upstream: SpanContext,
        *,
        keep: bool,
        link_client: bool,
        max_pending: int,
        span_name: str = SpanName.RELAY,
        trace_ids: TraceIds | None = None,
        churn: Churn | None = None,
        user: str = "",
    ) -> None:
        self._link = Link(upstream, {Attr.LINK_ROLE: LinkRole.UPSTREAM_CONNECT})
        self._trace_ids = trace_ids or TraceIds()
        self._span_name = span_name
        self._keep = keep
        self._link_client = link_client
        self._max_pending = max_pending
        self._churn, self._user = churn, user
        self._pending: list[_Pending] = []
        self.ids: dict[str, str] = {}  # conversation and user, from the welcome frame

    def to_upstream(self, text: str) -> str:
        """Trace a client frame and return what to forward (unchanged unless a message).

        Raises MessageRefused when the connection has too many messages awaiting answers,
        MessageHeld while the rate limit holds the user (neither is relayed).
        """
        frame = json_object(text)
        if frame is None or frame.get("type") != "message":
            return text
        if self._churn is not None and (held := self._churn.holds.refusal(self._user)):
            raise MessageHeld(held)
        if len(self._pending) >= self._max_pending:
            self._refuse_pending(frame)
        span = self._start_span(frame)
        self._pending.append(_Pending(span.get_span_context().trace_id, span))
        inject_frame(frame, span)
        # ensure_ascii=False: escaping would make "é" six bytes, and a frame the dashboard
        # accepted could exceed OMNI2's size limit.
        return json.dumps(frame, ensure_ascii=False)

    def _start_span(self, frame: dict[str, Any]) -> Span:
        """The message's span: the frame's context continued (or linked), as decided."""
        parent = client_parent(
            frame.get(FRAME_TRACE_KEY),
            keep=self._keep,
            link=self._link_client,
            trace_ids=self._trace_ids,
        )
        return tracer.start_span(
            self._span_name,
            context=parent.context,
            kind=SpanKind.SERVER,
            links=[self._link, *parent.links],
            attributes={**self.ids, **parent.attributes},
        )

    def _refuse_pending(self, frame: dict[str, Any]) -> None:
        """Raise MessageRefused: its own trace within the user's refusal budget, else counted
        (a client that keeps sending past the cap cannot make a trace a message)."""
        reason = f"too many messages awaiting an answer (at most {self._max_pending})"
        if self._churn is not None and not self._churn.refusals.traced(self._user):
            raise MessageRefused(error_frame(reason, None, "too_many_pending"), "")
        span = self._start_span(frame)
        span.set_attribute(Attr.ERROR_TYPE, "too_many_pending")
        span.set_status(Status(StatusCode.ERROR, reason))
        span.end()
        trace_id = f"{span.get_span_context().trace_id:032x}"
        raise MessageRefused(error_frame(reason, trace_id, "too_many_pending"), trace_id)

    def from_upstream(self, text: str) -> None:
        """Observe a frame from OMNI2 on its way to the client."""
        if OMNI2.is_stream_text(text) and self._pending:
            # Most frames are tokens: OMNI2 writes them in one shape, so they are counted
            # without parsing each one (the profile under load showed the JSON parse).
            self._token(self._pending[0])
            return
        frame = json_object(text)
        if frame is None:
            return
        kind = frame.get("type")
        if kind == "token" and self._pending:
            self._token(self._pending[0])
        elif kind in FINAL_FRAMES:
            pending_or_none = self._take(frame.get("trace_id"))
            if pending_or_none is not None:
                self._end(pending_or_none, frame)
        elif kind == "welcome":
            for key, attr in (("conversation_id", Attr.CONVERSATION_ID), ("user_id", Attr.USER_ID)):
                if isinstance(frame.get(key), str):
                    self.ids[attr] = frame[key]

    @staticmethod
    def _token(pending: _Pending) -> None:
        # OMNI2 answers a connection's messages in order: a token is the oldest pending's.
        if pending.token_frames == 0:
            pending.span.add_event(Event.FIRST_TOKEN)
            chat_metrics().first_token(time.perf_counter() - pending.started)
        pending.token_frames += 1

    def close(self, reason: str) -> None:
        """End spans of messages that never got an answer."""
        for pending in self._pending:
            pending.span.set_attribute(Attr.ERROR_TYPE, "no_reply")
            pending.span.set_status(Status(StatusCode.ERROR, reason))
            pending.span.end()
        self._pending.clear()

    def _take(self, trace_id: Any) -> _Pending | None:
        if not isinstance(trace_id, str):
            return self._pending.pop(0) if self._pending else None
        for i, pending in enumerate(self._pending):
            if f"{pending.trace_id:032x}" == trace_id:
                return self._pending.pop(i)
        return None  # an answer to a frame we did not trace (e.g. not JSON)

    def _end(self, pending: _Pending, frame: dict[str, Any]) -> None:
        span = pending.span
        span.set_attributes(
            self.ids | {Attr.TOKEN_FRAMES: pending.token_frames, Attr.FRAME_TYPE: frame["type"]}
        )
        if frame["type"] in FAILED_FRAMES:
            if self._churn is not None:
                self._churn.holds.hold(self._user, retry_after(frame), frame)
            span.set_attribute(Attr.ERROR_TYPE, str(frame.get("code") or "error"))
            span.set_status(Status(StatusCode.ERROR, str(frame.get("error", ""))[:200]))
        span.end()
