"""`/ws/chat`: check the origin, connect upstream first, then accept the browser and relay
frames both ways, within the connection's frame limits."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import INVALID_SPAN, Span, Status, StatusCode, format_trace_id
from starlette.types import Scope
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from otel.names import Attr, SpanName
from otel.websocket import ConnectionTrace, current_connection
from services.common.churn import Churn, ConnectRefused
from services.common.limits import FrameThrottle
from services.common.protocol import CloseCode, close_reason, error_frame
from services.common.refusal import Refusal, refuse
from services.common.tokens import TokenError, verify_token
from services.dashboard.refusal_log import ConnectionRefusals, RefusalLog
from services.dashboard.relay import MessageGate, MessageHeld, MessageRefused, RelayStall
from services.dashboard.settings import DashboardSettings
from services.dashboard.token_query import scope_token
from services.dashboard.upstream import connect_upstream

log = logging.getLogger(__name__)
tracer = trace.get_tracer(__name__)

# Codes that may not be sent in a close frame (RFC 6455 7.4.1): they only report.
_RESERVED = {1005, 1006, 1015}
ORIGIN_REFUSED = "origin not allowed"


def sendable(code: int | None, fallback: CloseCode) -> int:
    if code is None or code in _RESERVED or not (1000 <= code <= 4999):
        return int(fallback)
    return code


def origin_allowed(origin: str | None, allowed: list[str]) -> bool:
    """Browsers always send Origin on a WebSocket; a client without one is not a browser and
    could send any Origin it likes, so only a present, unlisted origin is refused."""
    return origin is None or "*" in allowed or origin.rstrip("/") in allowed


@dataclass
class Connection:
    """One client connection as the dashboard sees it: its tracing (otel.websocket's, None
    when untraced) and the refusals it answered itself."""

    websocket: WebSocket
    settings: DashboardSettings
    trace: ConnectionTrace | None
    refusals: ConnectionRefusals = field(default_factory=ConnectionRefusals)
    first_refusal_ns: int | None = None

    @property
    def session(self) -> Span:
        return self.trace.session if self.trace is not None else INVALID_SPAN

    @property
    def session_trace_id(self) -> str:
        context = self.session.get_span_context()
        return format_trace_id(context.trace_id) if context.is_valid else ""

    def refuse(self, name: str, detail: dict[str, Any], trace_id: str | None = None) -> None:
        """Remember a refusal for the audit trail (the session trace's unless a message's)."""
        if self.first_refusal_ns is None:
            self.first_refusal_ns = time.time_ns()
        self.refusals.add(trace_id or self.session_trace_id, name, detail)


@dataclass(frozen=True)
class ConnectAttempt:
    """Who connects (the token's user, else the address) and whether the connect rate
    refuses them: decided once, before tracing decides whether to trace the connection."""

    token: str | None
    user: str
    over_rate: ConnectRefused | None

    @property
    def traced(self) -> bool:
        return self.over_rate is None or self.over_rate.traced


_ATTEMPT = "dashboard.connect_attempt"  # where the scope keeps it


def connect_attempt(scope: Scope, settings: DashboardSettings, churn: Churn) -> ConnectAttempt:
    """The connection's attempt, counted against its user's connect rate once."""
    attempt = scope.get(_ATTEMPT)
    if isinstance(attempt, ConnectAttempt):
        return attempt
    token = scope_token(scope)
    user = connect_key(scope, token, settings)
    attempt = scope[_ATTEMPT] = ConnectAttempt(token, user, churn.check_connect(user))
    return attempt


def connect_key(scope: Scope, token: str | None, settings: DashboardSettings) -> str:
    """Whose connect rate a connect draws on: its token's user, or its address when the token
    is not valid (the gateway refuses it then anyway)."""
    if token:
        with contextlib.suppress(TokenError):
            return verify_token(token, settings.jwt_secret.get_secret_value()).user_id
    client = scope.get("client")
    return f"address {client[0] if client else ''}"


async def proxy_chat(
    websocket: WebSocket, settings: DashboardSettings, log_: RefusalLog, churn: Churn
) -> None:
    attempt = connect_attempt(websocket.scope, settings, churn)
    connection = Connection(websocket, settings, current_connection())
    span, over_rate = connection.session, attempt.over_rate
    if over_rate is not None and not over_rate.traced:
        # A flood: counted on the user's `chat.refused` span, neither traced nor logged.
        await refuse(websocket, span, over_rate.refusal)
        return
    try:
        if over_rate is not None:
            raise over_rate.refusal
        if not origin_allowed(websocket.headers.get("origin"), settings.allowed_origins):
            raise Refusal(CloseCode.FORBIDDEN, ORIGIN_REFUSED, "origin_not_allowed")
        if not attempt.token:
            raise Refusal(CloseCode.UNAUTHENTICATED, "missing token", "missing_token")
        upstream = await connect_upstream(
            settings.upstream_ws_url,
            attempt.token,
            settings.upstream_open_timeout_s,
            settings.dashboard_key,
        )
    except Refusal as refusal:
        log.info("refused chat connection: %s", refusal.reason)
        await refuse(websocket, span, refusal)
        return
    try:
        await websocket.accept()
    except (OSError, RuntimeError, WebSocketDisconnect):
        # The browser left while we were connecting upstream: release the upstream side.
        span.set_attribute(Attr.ERROR_TYPE, "client_gone")
        await upstream.close()
        return
    gate = MessageGate(
        connection.trace,
        max_pending=settings.max_pending_messages,
        churn=churn,
        user=attempt.user,
    )
    try:
        await Relay(connection, upstream, gate).run()
    finally:
        await _record_refusals(connection, log_)


class Relay:
    """Frames both ways between the browser and OMNI2 within the connection's limits: the
    frame rate (an error frame per refused frame; closed when the client keeps on), the
    messages pending (`MessageGate`), and what was refused, for the audit trail."""

    def __init__(self, connection: Connection, client: ClientConnection, gate: MessageGate):
        settings = connection.settings
        self.connection, self.client, self.gate = connection, client, gate
        self.throttle = FrameThrottle(
            settings.frames_per_second, settings.frame_burst, settings.abuse_frames
        )
        self.stall = (  # fault injection, off by default
            RelayStall(settings.relay_stall_ms, settings.relay_stall_after_tokens)
            if settings.relay_stall_ms
            else None
        )
        self.held = 0  # messages answered with the rate limit's refusal, without relaying them

    async def run(self) -> None:
        """Relay until either side closes; then close the other and record the refusals."""
        tasks = [
            asyncio.create_task(self.browser_to_upstream()),
            asyncio.create_task(self.upstream_to_browser()),
        ]
        try:
            _, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in pending:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(
                    asyncio.CancelledError,
                    ConnectionClosed,
                    WebSocketDisconnect,
                    RuntimeError,
                    OSError,
                ):
                    await task
        finally:
            await self.client.close()
            self._record_refused()

    async def browser_to_upstream(self) -> None:
        websocket, client = self.connection.websocket, self.client
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                await self._browser_closed(message.get("code"))
                return
            if not self.throttle.allow():
                if await self._over_frame_rate():
                    return
            elif message.get("text") is not None:
                await self._relay_text(message["text"])
            elif message.get("bytes") is not None:
                await client.send(message["bytes"])

    async def upstream_to_browser(self) -> None:
        websocket, gate, stall = self.connection.websocket, self.gate, self.stall
        with contextlib.suppress(ConnectionClosed):
            async for frame in self.client:
                if isinstance(frame, str):
                    gate.observe(frame)
                    if stall is not None:
                        await stall.before_forwarding(frame)
                    await websocket.send_text(frame)
                else:
                    await websocket.send_bytes(frame)
        code = self.client.close_code
        if code in (None, 1006):
            code, reason = CloseCode.GATEWAY_UNREACHABLE, "chat service connection lost"
        else:
            reason = self.client.close_reason or ""
        if websocket.client_state is WebSocketState.CONNECTED:
            await websocket.close(
                code=sendable(code, CloseCode.GATEWAY_UNREACHABLE), reason=close_reason(reason)
            )

    async def _browser_closed(self, code: int | None) -> None:
        if code == CloseCode.MESSAGE_TOO_BIG:
            self.connection.refuse(
                "frame_too_big",
                {"limit_bytes": self.connection.settings.max_frame_bytes, "close_code": code},
            )
        await self.client.close(code=sendable(code, CloseCode.NORMAL), reason="client closed")

    async def _over_frame_rate(self) -> bool:
        """A frame over the rate: told so, or, when the client kept on, closed (True)."""
        connection = self.connection
        if connection.first_refusal_ns is None:
            connection.first_refusal_ns = time.time_ns()  # the span starts here
        if self.throttle.abusive:
            reason = "too many frames: the connection kept sending after being told"
            await connection.websocket.close(CloseCode.POLICY_VIOLATION, close_reason(reason))
            await self.client.close(CloseCode.GOING_AWAY, "client closed")
            return True
        rate = f"{connection.settings.frames_per_second:g} per second"
        await self._tell(error_frame(f"too many frames: at most {rate}", None, "rate_limited"))
        return False

    async def _relay_text(self, text: str) -> None:
        try:
            self.gate.check(text)
            await self.client.send(text)  # traced as it goes (otel.websocket)
        except MessageRefused as refused:
            if refused.trace_id:  # else counted, past the user's refusal budget
                self.connection.refuse("too_many_pending", {}, refused.trace_id)
            await self._tell(refused.frame)
        except MessageHeld as hold:
            if self.connection.first_refusal_ns is None:
                self.connection.first_refusal_ns = time.time_ns()
            self.held += 1
            await self._tell(hold.frame)

    async def _tell(self, frame: dict[str, Any]) -> None:
        await self.connection.websocket.send_text(json.dumps(frame))

    def _record_refused(self) -> None:
        if self.throttle.refused:
            detail: dict[str, Any] = {"count": self.throttle.refused}
            if self.throttle.abusive:
                detail["close_code"] = int(CloseCode.POLICY_VIOLATION)
            self.connection.refuse("rate_limited", detail)
        if self.held:
            self.connection.refuse("rate_limit_held", {"count": self.held})


async def _record_refusals(connection: Connection, log_: RefusalLog) -> None:
    """One span in the session trace for the frames refused, and the flow events."""
    refusals = connection.refusals.by_trace.get(connection.session_trace_id, [])
    ids = dict(connection.trace.ids) if connection.trace is not None else {}
    if refusals:
        span = tracer.start_span(
            SpanName.REFUSED,
            context=trace.set_span_in_context(connection.session),
            attributes=ids,
            start_time=connection.first_refusal_ns,
        )
        for record in refusals:
            if record.name == "rate_limited":
                span.set_attribute(Attr.FRAMES_REFUSED, record.detail.get("count", 0))
            if record.name == "rate_limit_held":
                span.set_attribute(Attr.MESSAGES_REFUSED, record.detail.get("count", 0))
            if "close_code" in record.detail:
                span.set_attribute(Attr.CLOSE_CODE, record.detail["close_code"])
        span.set_attribute(Attr.ERROR_TYPE, ",".join(r.name for r in refusals))
        span.set_status(Status(StatusCode.ERROR, "frames refused"))
        span.end()
    user_id = ids.get(Attr.USER_ID, "")
    await log_.write(connection.refusals, user_id, ids.get(Attr.CONVERSATION_ID))
