"""One chat connection at OMNI2: turns in order, each traced as `chat.turn`.

A turn: checks (user, rate limit, usage, reserved atomically), the agent loop (model calls
and tool calls, streamed as token frames, with the conversation so far), then the message's
rows (user and assistant message, usage, flow events, all with the trace id) and `done`.
However a turn ends, it ends through one path (`_finish`): usage, flow events, span status,
the rows, then the frame for the client.

Frames are read apart from answering (frames.py): a reader takes each frame as it comes,
within the connection's frame limits, answers pings and malformed frames itself and queues
messages for a worker that answers them one at a time, in order.

The connection ends when the client leaves, when a check closes it (blocked user), when the
client keeps flooding (1008), or when its token expires (4401 "token expired"): a turn in
progress at that moment is answered first (the user has been charged for it), no frame is
read after it, and messages still waiting are not answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import anyio
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    format_span_id,
    format_trace_id,
)
from sqlalchemy.exc import SQLAlchemyError
from starlette.websockets import WebSocket, WebSocketDisconnect

from otel.metrics import chat_metrics
from otel.names import Attr, Entry, Flow, LinkRole, SpanName
from otel.propagation import (
    FRAME_TRACE_KEY,
    ClientParent,
    TraceIds,
    client_parent,
    extract_frame,
)
from otel.redaction import redact_text
from otel.sampling import conversation_keep, with_decision
from otel.websocket import current_connection
from services.common.churn import Churn
from services.common.protocol import (
    ClientMessage,
    ClientPing,
    CloseCode,
    FrameError,
    blocked_frame,
    close_reason,
    done_frame,
    error_frame,
    json_object,
    parse_client_frame,
    token_frame,
    warning_frame,
)
from services.db.repository.conversations import TurnRecord
from services.db.repository.flow import FlowRecord
from services.db.repository.users import UserContext
from services.omni2.agent import Agent, AgentResult, ClientGone
from services.omni2.checks import (
    CheckRun,
    ConnectionCount,
    ConnectionSlots,
    Denied,
    UsagePolicy,
    check_message,
)
from services.omni2.frames import FrameGate, Inbox
from services.omni2.model import ChatMessage, ChatModel, ModelError, ToolSpec
from services.omni2.revocation import TokenWatch
from services.omni2.settings import Omni2Settings
from services.omni2.steps import traced_step
from services.omni2.store import Store
from services.omni2.tools import McpToolbox, ToolsUnavailable
from services.omni2.webhook import UsageWebhook

log = logging.getLogger(__name__)
tracer = trace.get_tracer(__name__)

TOKEN_EXPIRED = "token expired"
DATABASE_UNAVAILABLE = "Service unavailable: OMNI2 cannot reach its database"
INTERNAL_ERROR = "internal error while answering"
FLOODED = "too many frames: the connection kept sending after being told"

# What the user is told when the model fails: a fixed reason per error type. The provider's
# own text (which may name accounts, keys, hosts) goes only on the span and the flow event.
MODEL_FAILURES: dict[str, str] = {
    "provider_auth": "The model provider refused OMNI2's credentials",
    "provider_rate_limited": "The model provider is rate limiting OMNI2; try again shortly",
    "provider_overloaded": "The model provider is overloaded; try again shortly",
    "provider_timeout": "The model provider did not answer in time",
    "provider_unreachable": "The model provider cannot be reached",
    "provider_unavailable": "The model provider is unavailable; try again later",
    "provider_not_found": "The model provider does not know the configured model",
    "provider_error": "The model provider returned an error",
    "bad_response": "The model provider sent an answer OMNI2 cannot read",
    "incomplete": "The model's answer ended early",
    "model_error": "The model could not answer",
}


class SessionClosed(Exception):
    """We closed the connection (the user was blocked)."""


@dataclass
class ChatServices:
    """What every connection of this OMNI2 process shares."""

    settings: Omni2Settings
    store: Store
    model: ChatModel
    toolbox: McpToolbox
    connections: ConnectionSlots = field(default_factory=ConnectionCount)
    webhook: UsageWebhook = field(default_factory=lambda: UsageWebhook(None))
    # Trace ids of clients that reached OMNI2 without a dashboard (OMNI2 is their first hop).
    trace_ids: TraceIds = field(default_factory=TraceIds)
    # What such a client's churn may cost the trace store (OMNI2 is its first hop).
    churn: Churn = field(init=False)
    # The open connections' tokens, checked together (revocation.py).
    token_watch: TokenWatch = field(init=False)

    def __post_init__(self) -> None:
        self.churn = Churn.of(self.settings)
        self.token_watch = TokenWatch(self.store.db, self.settings.token_check_interval_s)

    @property
    def usage_policy(self) -> UsagePolicy:
        s = self.settings
        price = max(s.price_input_per_mtok, s.price_output_per_mtok)
        return UsagePolicy(
            s.usage_warning_ratio, s.usage_reserve_tokens, s.usage_reserve_tokens * price / 1e6
        )


@dataclass
class _Outcome:
    """How a turn ended, for `_finish` to record and tell once."""

    frame: dict[str, Any] | None  # for the client; None: nobody left to tell
    error_type: str | None = None  # None: answered
    reason: str = ""  # the span's status: may carry detail (redacted), never sent
    flow: FlowRecord | None = None  # the turn's `error` flow event
    close: CloseCode | None = None  # close the connection after the frame
    client_gone: bool = False


@dataclass
class ChatSession:
    websocket: WebSocket
    services: ChatServices
    user: UserContext
    conversation_id: str
    gateway: SpanContext | None  # the Traefik span this connection came through
    session: SpanContext  # OMNI2's chat.connect span of this connection
    expires_at: float  # epoch seconds: the token's expiry
    # How the connection came (otel.names.Entry): through a dashboard, its frames carry the
    # dashboard's context; else the client's own, and OMNI2 is the first hop that records it.
    entry: str = Entry.DASHBOARD
    # The turn being answered, until its first token frame is sent (for the first_token event).
    _awaiting_first_token: trace.Span | None = field(default=None, init=False)
    _turn_started: float = field(default=0.0, init=False)
    _first_token_s: float | None = field(default=None, init=False)
    # gen_ai.server.* attributes: the same for every message of the connection, built once.
    _served_attributes: dict[str, str] = field(init=False)
    # The conversation so far, for the model. The conversation was created by this connection
    # and only this connection writes to it, so what it stored is what it holds here: no
    # database read per message (and no `chat.history` span for a read that does not happen).
    _history: deque[ChatMessage] = field(init=False)
    # The frame limits, and the messages read and not yet answered (see `run`).
    _frames: FrameGate = field(init=False)
    _inbox: Inbox = field(init=False)
    # The reader and the worker both send; one frame at a time (see `_send`).
    _sending: asyncio.Lock = field(default_factory=asyncio.Lock, init=False)

    def __post_init__(self) -> None:
        self._history = deque(maxlen=2 * self.settings.history_turns)
        self._frames = FrameGate.of(self.settings)
        self._inbox = Inbox(self.settings.max_pending_messages)
        model = self.services.model
        self._served_attributes = {
            Attr.GEN_AI_OPERATION: "chat",
            Attr.GEN_AI_PROVIDER: model.provider,
            Attr.GEN_AI_REQUEST_MODEL: model.name,
        }

    @property
    def user_id(self) -> str:
        return self.user.user_id

    @property
    def settings(self) -> Omni2Settings:
        return self.services.settings

    async def run(self) -> None:
        """Serve frames until the client goes away, we close, or the token expires.

        A reader (`_read`) and a worker (`_work`): reading apart from answering lets a ping or
        a malformed frame be answered while a message is, and the pending cap hold."""
        loop = asyncio.get_running_loop()
        # The token's expiry as a receive deadline: the timer of this connection, gone with it.
        deadline = loop.time() + max(0.0, self.expires_at - time.time())
        reader = asyncio.create_task(self._read(deadline))
        worker = asyncio.create_task(self._work(deadline))
        try:
            if await self._until_done(reader, worker):
                await self._expire()
        except (ClientGone, SessionClosed):
            return
        finally:
            # Shielded: a connection whose task is cancelled (a client that vanished) still
            # stops its tasks before it ends, and its refused frames are still recorded.
            with anyio.CancelScope(shield=True):
                await _stop(reader, worker)
                await self._record_refused()

    async def _until_done(self, reader: asyncio.Task[bool], worker: asyncio.Task[None]) -> bool:
        """Wait for the connection to end; True when its token expired (nothing else ended it).

        Raises ClientGone or SessionClosed when the client left or a check closed it."""
        await asyncio.wait((reader, worker), return_when=asyncio.FIRST_COMPLETED)
        if reader.done():
            # No frame is read any more: the turn in progress is answered (the user has been
            # charged for it), the messages still waiting are not.
            self._inbox.close()
        await worker
        return await reader

    async def _read(self, deadline: float) -> bool:
        """Read frames within the connection's rate until the client leaves or floods (False)
        or the token expires (True): no frame is read after that."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                async with asyncio.timeout_at(deadline):
                    message = await self.websocket.receive()
            except TimeoutError:
                return True
            if message["type"] == "websocket.disconnect":
                return False
            if loop.time() >= deadline:  # read as the token expired, without a wait: not served
                return True
            # A dashboard's connection met the same rate there (its key says so): counted
            # twice, network timing could refuse a frame the dashboard let through.
            if self.entry == Entry.DASHBOARD or self._frames.allow():
                await self.handle(message.get("text"), message.get("bytes"))
            elif self._frames.abusive:
                await self._close_flooded()
                return False
            else:
                await self._send(self._rate_limited())

    async def _work(self, deadline: float) -> None:
        """Answer the queued messages one at a time, in order, until the reader stops or the
        token expires (the turn in progress then is finished; no next one is started)."""
        loop = asyncio.get_running_loop()
        while (frame := await self._inbox.take()) is not None and loop.time() < deadline:
            try:
                if (held := self._held()) is not None:
                    await self._refuse_held(held)
                else:
                    await self._turn(frame)
            finally:
                # No await since the turn's last frame was written: through the dashboard, which
                # counts a message pending until it relays that frame, this cap is never met
                # before the dashboard's own.
                self._inbox.answered()

    async def handle(self, text: str | None, data: bytes | None) -> None:
        """A frame the rate let through: a malformed frame or a ping is answered at once, a
        message is queued for the worker (or refused while too many await their answer)."""
        try:
            frame = parse_client_frame(text, data)
        except FrameError as err:
            await self._reject(text, err)
            return
        if isinstance(frame, ClientPing):
            await self._send({"type": "pong"})
            return
        assert isinstance(frame, ClientMessage)
        if not self._inbox.put(frame):
            await self._refuse_pending(frame)

    def _links(self) -> list[Link]:
        if self.gateway is None:
            return []
        return [Link(self.gateway, {Attr.LINK_ROLE: LinkRole.GATEWAY})]

    def span_attributes(self) -> dict[str, Any]:
        return {
            Attr.CONVERSATION_ID: self.conversation_id,
            Attr.USER_ID: self.user_id,
            **sample_keep(self.settings, self.conversation_id),
        }

    def _message_attributes(self, parent: ClientParent) -> dict[str, Any]:
        """A message span's: the conversation's, what the client's context was (when OMNI2 is
        the first hop), and how the connection came, for the audit: the dashboard and
        Traefik are expected only when they were on the way."""
        return self.span_attributes() | parent.attributes | {Attr.ENTRY: self.entry}

    def _in_session_trace(self) -> Context:
        return trace.set_span_in_context(NonRecordingSpan(self.session))

    def _message_parent(self, frame: dict[str, Any]) -> ClientParent:
        """The frame's trace context, traced as this connection is: the dashboard (or OMNI2,
        without one) decided for the whole conversation (the session trace's sampled flag
        says what), and the frame's own flags, which a client may have written, decide
        nothing. Without a dashboard the context is the client's: OMNI2 records what it was,
        and does not join a trace id used before."""
        keep = self.session.trace_flags.sampled
        if self.entry == Entry.DASHBOARD:
            return ClientParent(with_decision(extract_frame(frame), keep), [], {})
        return client_parent(
            frame.get(FRAME_TRACE_KEY), keep=keep, link=False, trace_ids=self.services.trace_ids
        )

    async def _reject(self, text: str | None, err: FrameError) -> None:
        """A malformed frame gets a traced answer and a flow event; the connection stays open.

        With trace context of its own (e.g. a `message` frame the dashboard relayed), the
        refusal is that message's `chat.turn`. Without, it is a `chat.reject` child of this
        connection's chat.connect in the session trace, not a new trace (nor a new trace linked
        to the session): Jaeger's in-memory store evicts whole traces, so a trace per frame
        would let one client flood everyone's traces out, while children of the session trace
        add to one trace per connection, found from the conversation and the flow events."""
        parent = self._message_parent(_frame_object(text))
        own = parent.client is not None
        flow: list[FlowRecord] = []
        attributes = self.span_attributes()
        with traced_step(
            flow,
            Flow.FRAME,
            err.error_type,
            self.settings.turn_span_name if own else SpanName.REJECT,
            span_kind=SpanKind.SERVER,
            context=parent.context if own else self._in_session_trace(),
            links=self._links(),
            attributes=self._message_attributes(parent) if own else attributes,
        ) as step:
            step.fail(err.error_type, str(err), status="denied", reason=str(err))
            step.stop_clock()
            trace_id = _trace_id(step.span)
            await self.services.store.record_flow(
                flow, trace_id, self.user_id, self.conversation_id, attributes
            )
            await self._send(error_frame(str(err), trace_id, err.error_type))

    async def _refuse_pending(self, frame: ClientMessage) -> None:
        """A message while `max_pending_messages` await their answer: its `chat.turn` (in the
        trace its frame names) refused, a flow event, an `error` frame; the connection stays."""
        limit = self.settings.max_pending_messages
        reason = f"too many messages awaiting an answer (at most {limit})"
        # OMNI2 is the first hop of a client without a dashboard: past the user's budget of
        # traced refusals, counted instead of a trace each (services/common/churn.py).
        if self.entry != Entry.DASHBOARD and not self.services.churn.refusals.traced(self.user_id):
            await self._send(error_frame(reason, None, "too_many_pending"))
            return
        flow: list[FlowRecord] = []
        attributes = self.span_attributes()
        parent = self._message_parent(frame.raw)  # as `_turn`: the same span, refused
        with traced_step(
            flow,
            Flow.REFUSED,
            "too_many_pending",
            self.settings.turn_span_name,
            span_kind=SpanKind.SERVER,
            context=parent.context,
            links=self._links(),
            attributes=self._message_attributes(parent) | {Attr.MESSAGE_CHARS: len(frame.text)},
            detail={"limit": limit},
        ) as step:
            step.fail("too_many_pending", reason, status="denied")
            step.stop_clock()
            trace_id = _trace_id(step.span)
            await self.services.store.record_flow(
                flow, trace_id, self.user_id, self.conversation_id, attributes
            )
            await self._send(error_frame(reason, trace_id, "too_many_pending"))

    def _held(self) -> dict[str, Any] | None:
        if self.entry == Entry.DASHBOARD:
            return None
        return self.services.churn.holds.refusal(self.user_id)

    async def _refuse_held(self, frame: dict[str, Any]) -> None:
        """A message while the rate limit holds the user: the same refusal, without a check,
        a row or a trace of its own (counted on the connection's `chat.refused`), so that a
        client sending as fast as its frame rate allows makes one message trace, not one a
        message. Only for a client OMNI2 is the first hop of (a dashboard holds its own)."""
        self._frames.held += 1
        if self._frames.first_refused_ns is None:
            self._frames.first_refused_ns = time.time_ns()
        await self._send(frame)

    def _rate_limited(self) -> dict[str, Any]:
        """The answer to a frame over the rate: no span and no row per refused frame, so that
        what a flood costs stays small (they are counted, and recorded once)."""
        rate = f"{self.settings.frames_per_second:g} per second"
        return error_frame(f"too many frames: at most {rate}", None, "rate_limited")

    async def _close_flooded(self) -> None:
        """Close a connection that kept flooding after its frames were refused (1008)."""
        self._frames.closed = True
        log.warning("closing connection of user=%s: %s", self.user_id, FLOODED)
        with contextlib.suppress(RuntimeError, OSError, WebSocketDisconnect):
            await self.websocket.close(CloseCode.POLICY_VIOLATION, close_reason(FLOODED))

    async def _record_refused(self) -> None:
        """The frames the rate refused, once when the connection ends (never one by one): one
        `chat.refused` span in the session trace and one flow event, with the count."""
        gate = self._frames
        if not gate.refused and not gate.held:
            return
        detail: dict[str, Any] = {"count": gate.refused}
        if gate.held:
            detail["messages"] = gate.held
        if gate.closed:
            detail["close_code"] = int(CloseCode.POLICY_VIOLATION)
        attributes = self.span_attributes()
        span = tracer.start_span(
            SpanName.REFUSED,
            context=self._in_session_trace(),
            attributes=attributes
            | {
                Attr.FRAMES_REFUSED: gate.refused,
                Attr.MESSAGES_REFUSED: gate.held,
                Attr.ERROR_TYPE: "rate_limited",
            }
            | ({Attr.CLOSE_CODE: detail["close_code"]} if gate.closed else {}),
            start_time=gate.first_refused_ns,
        )
        span.set_status(Status(StatusCode.ERROR, "frames refused"))
        span_id = format_span_id(span.get_span_context().span_id)
        record = FlowRecord(Flow.REFUSED, "rate_limited", "denied", detail=detail, span_id=span_id)
        with trace.use_span(span, end_on_exit=True):
            await self.services.store.record_flow(
                [record], _trace_id(span), self.user_id, self.conversation_id, attributes
            )

    async def _expire(self) -> None:
        """Close with 4401 "token expired" (a span and a flow event in the session trace)."""
        flow: list[FlowRecord] = []
        attributes = self.span_attributes()
        code = CloseCode.UNAUTHENTICATED
        with traced_step(
            flow,
            Flow.CLOSE,
            "token_expired",
            SpanName.CLOSE,
            context=self._in_session_trace(),
            attributes=attributes | {Attr.CLOSE_CODE: int(code), Attr.CLOSE_REASON: TOKEN_EXPIRED},
            detail={"code": int(code), "reason": TOKEN_EXPIRED},
        ) as step:
            log.info("closing connection of user=%s: token expired", self.user_id)
            # The audit row first: once the client sees the close, the trail holds it.
            step.stop_clock()
            await self.services.store.record_flow(
                flow, _trace_id(step.span), self.user_id, self.conversation_id, attributes
            )
            with contextlib.suppress(RuntimeError, OSError, WebSocketDisconnect):
                await self.websocket.close(code=code, reason=TOKEN_EXPIRED)

    async def _turn(self, frame: ClientMessage) -> None:
        attributes = self.span_attributes()
        # The message's `chat.turn` (otel.websocket: its parent, links and client context as
        # the connection is traced; it ends with the frame that ends the message).
        connection = current_connection()
        span = connection.open_message(frame.raw) if connection else trace.INVALID_SPAN
        span.set_attributes(
            attributes | {Attr.ENTRY: self.entry, Attr.MESSAGE_CHARS: len(frame.text)}
        )
        with trace.use_span(span, record_exception=False, set_status_on_exception=False):
            self._awaiting_first_token = span
            self._turn_started = time.perf_counter()
            self._first_token_s = None
            record = TurnRecord(self.conversation_id, self.user_id, _trace_id(span))
            result = AgentResult(flow=record.flow)
            outcome = await self._answer_turn(frame, record, result, attributes)
            await self._finish(span, record, result, outcome, attributes)

    async def _answer_turn(
        self,
        frame: ClientMessage,
        record: TurnRecord,
        result: AgentResult,
        attributes: dict[str, Any],
    ) -> _Outcome:
        """Checks, then the answer; every way this ends becomes an outcome, none is raised."""
        trace_id = record.trace_id
        checks = CheckRun(attributes, record.flow)
        try:
            # The span around the transaction: it ends (and is encoded) after the commit, not
            # while the transaction holds SQLite's turn, and its length includes the wait.
            with checks.traced():
                async with self.services.store.db.session() as session:
                    allowance = await check_message(
                        session, checks, self.user_id, self.services.usage_policy
                    )
        except Denied as denied:
            frame_out = (
                blocked_frame(denied.message, trace_id)
                if denied.frame == "blocked"
                else error_frame(denied.message, trace_id, denied.error_type)
            )
            if denied.retry_after_s > 0:
                frame_out["retry_after_s"] = round(denied.retry_after_s, 1)
                if self.entry != Entry.DASHBOARD:  # a dashboard holds its own clients
                    self.services.churn.holds.hold(self.user_id, denied.retry_after_s, frame_out)
            return _Outcome(frame_out, denied.error_type, denied.message, close=denied.close)
        except (SQLAlchemyError, OSError) as err:
            # Without the database no check can pass: refuse, and say why.
            log.error("checks failed, database unavailable: %s", err)
            return _Outcome(
                error_frame(DATABASE_UNAVAILABLE, trace_id, "database_unavailable"),
                "database_unavailable",
                "database unavailable",
            )
        self.user = allowance.user
        record.user_text = frame.text
        record.reservation = allowance.reservation
        try:
            for warning in allowance.warnings:
                await self._send(warning_frame(warning))
            await self._answer(frame.text, attributes, result)
        except ModelError as err:
            code = err.error_type if err.error_type in MODEL_FAILURES else "model_error"
            detail = redact_text(str(err))
            log.warning("model failed for trace %s: %s", trace_id, detail)
            return _Outcome(
                error_frame(MODEL_FAILURES[code], trace_id, code),
                err.error_type,
                f"model failed: {detail}",
                FlowRecord(Flow.ERROR, err.error_type, "error", detail={"error": detail}),
            )
        except ToolsUnavailable as err:
            # OMNI2's own words about its tool server (tools.py), not a provider's.
            detail = redact_text(str(err))
            return _Outcome(
                error_frame(detail, trace_id, "mcp_unavailable"),
                "mcp_unavailable",
                detail,
                FlowRecord(Flow.ERROR, "mcp_unavailable", "error", detail={"error": detail}),
            )
        except ClientGone:
            return _Outcome(
                None,
                "client_gone",
                "client closed before the reply was sent",
                FlowRecord(Flow.ERROR, "client_gone", "error"),
                client_gone=True,
            )
        except Exception as err:  # a bug or an unexpected failure: say so, keep the chat
            log.exception("message of trace %s failed", trace_id)
            return _Outcome(
                error_frame(INTERNAL_ERROR, trace_id, "internal_error"),
                type(err).__name__,
                "internal error",
                FlowRecord(
                    Flow.ERROR,
                    "internal_error",
                    "error",
                    detail={"error": redact_text(repr(err))[:500]},
                ),
            )
        record.assistant_text = result.text
        return _Outcome(None)

    async def _finish(
        self,
        span: trace.Span,
        record: TurnRecord,
        result: AgentResult,
        outcome: _Outcome,
        attributes: dict[str, Any],
    ) -> None:
        """The one way a turn ends: usage, flow event, span, rows (settling the reservation),
        then the frame, then a close or the client's absence passed up."""
        self._usage(record, result)
        # As the server of the stream, up to its last frame (the done or error frame).
        chat_metrics().served(
            self._served_attributes,
            seconds=time.perf_counter() - self._turn_started,
            first_token_s=self._first_token_s,
            output_tokens=result.output_tokens,
            error_type=outcome.error_type,
        )
        if outcome.flow is not None:
            record.flow.append(outcome.flow)
        frame = outcome.frame
        if outcome.error_type is not None:
            span.set_attribute(Attr.ERROR_TYPE, outcome.error_type)
            span.set_status(Status(StatusCode.ERROR, redact_text(outcome.reason)))
        else:
            span.set_attributes(
                {
                    Attr.REPLY_CHARS: len(result.text),
                    Attr.TOKEN_FRAMES: result.chunks,
                    Attr.AGENT_ITERATIONS: result.iterations,
                    Attr.TOOL_CALLS: result.tool_calls,
                    Attr.USAGE_COST: record.cost,
                }
            )
            chat_metrics().usage_cost(model=record.model, user_id=self.user_id, cost=record.cost)
            frame = done_frame(self._result(result, record), record.trace_id)
        if outcome.close is not None:
            span.set_attributes(
                {Attr.CLOSE_CODE: int(outcome.close), Attr.CLOSE_REASON: outcome.reason}
            )
        await self.services.store.save_turn(record, attributes)
        self._remember(record)
        if outcome.client_gone:
            raise ClientGone
        if frame is not None:
            await self._send(frame)
        if outcome.error_type is None:
            # After the reply: the webhook is never in the chat's way.
            self.services.webhook.post(
                {**self._result(result, record), "user_id": self.user_id, "model": record.model},
                trace.set_span_in_context(span),
            )
        if outcome.close is not None:
            with contextlib.suppress(RuntimeError, OSError, WebSocketDisconnect):
                await self.websocket.close(code=outcome.close, reason=close_reason(outcome.reason))
            raise SessionClosed

    def _remember(self, record: TurnRecord) -> None:
        """The turn's messages as they were stored, for the next turns' model calls."""
        if record.user_text is not None:
            self._history.append(ChatMessage("user", record.user_text))
        if record.assistant_text is not None:
            self._history.append(ChatMessage("assistant", record.assistant_text))

    def _result(self, reply: AgentResult, record: TurnRecord) -> dict[str, Any]:
        return {
            "tokens_used": reply.input_tokens + reply.output_tokens,
            "tokens_input": reply.input_tokens,
            "tokens_output": reply.output_tokens,
            "tools_used": reply.tools_used,
            "tool_calls": reply.tool_calls,
            "cost": round(record.cost, 6),
            "finish_reason": reply.finish_reason,
            "conversation_id": self.conversation_id,
        }

    async def _answer(
        self, text: str, attributes: dict[str, Any], result: AgentResult
    ) -> AgentResult:
        tools = await self._tools(result)
        agent = Agent(
            self.services.model,
            self.services.toolbox,
            self.settings.max_agent_iterations,
            attributes,
            self.settings.chunk_metrics,
        )
        trace.get_current_span().set_attributes(
            {
                Attr.AGENT_MAX_ITERATIONS: self.settings.max_agent_iterations,
                Attr.HISTORY_MESSAGES: len(self._history),
            }
        )
        system = [ChatMessage("system", self.settings.system_prompt)]
        prompt = [*system, *self._history, ChatMessage("user", text)]
        return await agent.run(prompt, tools, self.user, self._send_token, result)

    async def _tools(self, result: AgentResult) -> list[ToolSpec]:
        """The tools this user's role may use; when the MCP server cannot list them, a `warning`
        frame says so and the model answers without tools."""
        toolbox = self.services.toolbox
        if not toolbox.configured or not self.user.may("tools"):
            return []
        try:
            catalogue = await toolbox.catalogue(self.conversation_id, self.user_id)
        except ToolsUnavailable as err:
            detail = redact_text(str(err))
            log.warning("no tools for this message: %s", detail)
            await self._send(warning_frame(f"tools unavailable: {detail}", "tools_unavailable"))
            result.flow.append(
                FlowRecord(
                    Flow.TOOL_CALL, SpanName.MCP_LIST_TOOLS, "error", detail={"error": detail}
                )
            )
            return []
        return [t for t in catalogue if self.user.may_use_tool(t.name)]

    def _usage(self, record: TurnRecord, result: AgentResult) -> None:
        record.provider = self.services.model.provider
        record.model = self.services.model.name
        record.tokens_input = result.input_tokens
        record.tokens_output = result.output_tokens
        record.cost = (
            result.input_tokens * self.settings.price_input_per_mtok
            + result.output_tokens * self.settings.price_output_per_mtok
        ) / 1_000_000

    async def _send_token(self, text: str) -> None:
        if self._awaiting_first_token is not None:
            # The `first_token` event is otel.websocket's, as it sends the frame.
            waited = time.perf_counter() - self._turn_started
            # An attribute too: tail sampling keeps the messages whose first token was slow.
            self._awaiting_first_token.set_attribute(Attr.TIME_TO_FIRST_TOKEN, waited * 1000)
            self._awaiting_first_token = None
            self._first_token_s = waited
            chat_metrics().first_token(waited, server_of_stream=True)
        await self._send(token_frame(text))

    async def _send(self, frame: dict[str, Any]) -> None:
        try:
            # The reader and the worker both send. uvicorn writes each frame whole, but ASGI
            # does not promise that concurrent sends are safe: one at a time, in turn.
            async with self._sending:
                await self.websocket.send_text(json.dumps(frame))
        except (WebSocketDisconnect, RuntimeError, OSError) as err:
            span = trace.get_current_span()
            span.set_attribute(Attr.ERROR_TYPE, "client_gone")
            span.set_status(Status(StatusCode.ERROR, "client closed before the reply was sent"))
            raise ClientGone from err


async def _stop(*tasks: asyncio.Task[Any]) -> None:
    """Cancel what still runs of a connection's tasks, and wait until they have ended."""
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def _trace_id(span: trace.Span) -> str:
    return format_trace_id(span.get_span_context().trace_id)


def _frame_object(text: str | None) -> dict[str, Any]:
    """Best effort: the frame we could not accept as a JSON object, to find its context."""
    return (json_object(text) if text is not None else None) or {}


def sample_keep(settings: Omni2Settings, conversation_id: str) -> dict[str, bool]:
    """`chat.sample.keep` for a conversation's spans, when conversation sampling is on."""
    ratio = settings.conversation_sample_ratio
    if ratio is None:
        return {}
    return {Attr.SAMPLE_KEEP: conversation_keep(conversation_id, ratio)}
