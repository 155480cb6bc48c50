"""The chat client layer: log in, connect through the dashboard, send messages, traced.

Like a browser it cannot set WebSocket headers, so the token and the trace context of
`chat.connect` ride in the query string, and each message frame carries its own `trace`.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind, Status, StatusCode, TracerProvider, format_trace_id
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from omni_trace.errors import CliError
from otel.names import Attr, Event, SpanName
from otel.propagation import FRAME_TRACE_KEY, w3c_carrier
from otel.stream import TokenClock
from services.common.protocol import FAILED_FRAMES, FINAL_FRAMES

TokenCallback = Callable[[str], None]


class ChatError(CliError):
    pass


class LoginFailed(ChatError):
    pass


class ChatRefused(ChatError):
    """The stack closed the connection instead of welcoming us."""

    def __init__(self, code: int | None, reason: str, session_trace_id: str) -> None:
        super().__init__(f"connection refused (close code {code}): {reason or 'no reason given'}")
        self.code = code
        self.reason = reason
        self.session_trace_id = session_trace_id  # the refused connection's trace


@dataclass
class ChatReply:
    text: str
    trace_id: str  # the message trace (client span's trace; equals done/error's trace_id)
    frame: dict[str, Any]  # the final done or error frame
    time_to_first_token_s: float | None
    duration_s: float
    frames: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.frame.get("type") == "done"

    @property
    def error(self) -> str | None:
        return None if self.ok else str(self.frame.get("error", "closed without a reply"))


async def login(dashboard_url: str, user: str, password: str) -> str:
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.post(
            f"{dashboard_url}/api/login", json={"username": user, "password": password}
        )
    if response.status_code != 200:
        raise LoginFailed(f"login as {user!r} failed: HTTP {response.status_code} {response.text}")
    return str(response.json()["token"])


@dataclass
class _Answer:
    """What came back for one message, as `ChatConnection.send` collects it."""

    final: dict[str, Any] = field(
        default_factory=lambda: {"type": "error", "error": "connection closed"}
    )
    pieces: list[str] = field(default_factory=list)
    frames: list[dict[str, Any]] = field(default_factory=list)
    first_token: float | None = None
    clock: TokenClock = field(default_factory=TokenClock)  # gaps between token frames


class ChatConnection:
    def __init__(
        self,
        connection: ClientConnection,
        welcome: dict[str, Any],
        session_trace_id: str,
        tracer: trace.Tracer,
        message_span_name: str = SpanName.MESSAGE,
    ) -> None:
        self.connection = connection
        self.welcome = welcome
        self.session_trace_id = session_trace_id
        self._tracer = tracer
        self._message_span_name = message_span_name

    @property
    def conversation_id(self) -> str | None:
        value = self.welcome.get("conversation_id")
        return value if isinstance(value, str) else None

    async def send_raw(self, frame: str | bytes) -> dict[str, Any]:
        """Send any frame (even malformed) and return the next done/error/blocked/pong frame."""
        await self.connection.send(frame)
        while True:
            reply = json.loads(await self.connection.recv())
            if reply.get("type") in FINAL_FRAMES or reply.get("type") == "pong":
                return dict(reply)

    async def send(
        self, text: str, on_token: TokenCallback | None = None, extra: dict[str, Any] | None = None
    ) -> ChatReply:
        """One message as one trace: its span (`chat.message`) from send until done/error."""
        attributes: dict[str, Any] = {Attr.MESSAGE_CHARS: len(text)}
        if self.conversation_id:
            attributes[Attr.CONVERSATION_ID] = self.conversation_id
        # A root whatever span is current: the trace is the message's alone (the first hop
        # refuses to join a trace id that an earlier message used).
        with self._tracer.start_as_current_span(
            self._message_span_name, context=Context(), kind=SpanKind.CLIENT, attributes=attributes
        ) as span:
            frame = {"type": "message", "text": text, **(extra or {})}
            frame[FRAME_TRACE_KEY] = w3c_carrier(span)
            started = time.perf_counter()
            answer = _Answer()  # its clock starts with the message, as the span does
            await self.connection.send(json.dumps(frame))
            await self._receive(answer, span, started, on_token)
            final = answer.final
            if answer.first_token is not None:
                span.set_attribute(Attr.TIME_TO_FIRST_TOKEN, answer.first_token * 1000)
            span.set_attributes(answer.clock.attributes())
            span.set_attribute(Attr.FRAME_TYPE, str(final.get("type")))
            if final.get("type") in FAILED_FRAMES:
                span.set_attribute(Attr.ERROR_TYPE, str(final.get("code") or "error"))
                span.set_status(Status(StatusCode.ERROR, str(final.get("error"))[:200]))
            return ChatReply(
                text="".join(answer.pieces),
                trace_id=format_trace_id(span.get_span_context().trace_id),
                frame=final,
                time_to_first_token_s=answer.first_token,
                duration_s=time.perf_counter() - started,
                frames=answer.frames,
            )

    async def _receive(
        self, answer: _Answer, span: trace.Span, started: float, on_token: TokenCallback | None
    ) -> None:
        """The frames up to the final one (or the connection's close), into `answer`."""
        try:
            async for raw in self.connection:
                data = json.loads(raw)
                answer.frames.append(data)
                if data.get("type") == "token":
                    answer.clock.mark()
                    if answer.first_token is None:
                        answer.first_token = time.perf_counter() - started
                        span.add_event(Event.FIRST_TOKEN)
                    answer.pieces.append(str(data.get("text", "")))
                    if on_token:
                        on_token(str(data.get("text", "")))
                elif data.get("type") in FINAL_FRAMES:
                    answer.final = data
                    break
        except ConnectionClosed as closed:
            answer.final = {"type": "error", "error": f"connection closed: {closed}"}

    async def close(self) -> None:
        await self.connection.close()


@asynccontextmanager
async def open_chat(
    ws_url: str,
    token: str | None,
    *,
    tracer_provider: TracerProvider | None = None,
    headers: dict[str, str] | None = None,
    open_timeout: float = 10.0,
    message_span_name: str = SpanName.MESSAGE,
) -> AsyncIterator[ChatConnection]:
    """Connect as the client layer; `chat.connect` lasts until the welcome frame arrives.
    Each message is a `message_span_name` span (another stack's client may name it its way)."""
    tracer = trace.get_tracer(__name__, tracer_provider=tracer_provider)
    parts = urlsplit(ws_url)
    with tracer.start_as_current_span(
        SpanName.CONNECT,
        kind=SpanKind.CLIENT,
        record_exception=False,
        attributes={Attr.SERVER_ADDRESS: parts.hostname or "", Attr.SERVER_PORT: parts.port or 80},
    ) as span:
        query = {"token": token} if token is not None else {}
        query |= w3c_carrier(span)
        url = f"{ws_url}?{urlencode(query)}"
        session_trace_id = format_trace_id(span.get_span_context().trace_id)
        try:
            connection = await connect(url, additional_headers=headers, open_timeout=open_timeout)
        except OSError as err:
            span.set_status(Status(StatusCode.ERROR, f"cannot connect: {err.strerror or err}"))
            raise ChatError(f"cannot connect to {ws_url}: {err.strerror or err}") from None
        try:
            welcome = json.loads(await connection.recv())
        except ConnectionClosed as closed:
            code = closed.rcvd.code if closed.rcvd else None
            reason = closed.rcvd.reason if closed.rcvd else ""
            span.set_attributes({Attr.CLOSE_CODE: code or 0, Attr.CLOSE_REASON: reason})
            span.set_status(Status(StatusCode.ERROR, reason or "closed"))
            raise ChatRefused(code, reason, session_trace_id) from None
        for key, attr in (("conversation_id", Attr.CONVERSATION_ID), ("user_id", Attr.USER_ID)):
            if isinstance(welcome.get(key), str):
                span.set_attribute(attr, welcome[key])
    chat = ChatConnection(connection, welcome, session_trace_id, tracer, message_span_name)
    try:
        yield chat
    finally:
        await connection.close()
