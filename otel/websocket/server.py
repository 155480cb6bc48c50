"""The server side of a WebSocket chat, traced at the ASGI level: the handler is untouched.

`ChatTracingMiddleware` wraps an ASGI app (FastAPI, Starlette, any) and, for the WebSocket
paths it is given, reads what the app receives and sends:

- a session trace per connection: `chat.connect` (SERVER) from the handshake until the
  server's first frame (a welcome, a relayed one) or its close; a refusal (a close before
  that) is recorded with its code and reason; an upstream connection the handler opens with
  the `websockets` client meanwhile is its child (otel.websocket.client);
- a message trace per chat message: a SERVER span from the frame that opens it (the codec
  says which) to the frame that ends it, with a `first_token` event, the count of token
  frames and the gaps between them as this layer saw them (`chat.stream.*`, otel.stream);
  its context is continued from the frame (or linked to it), and the frame handed to the app
  carries this span instead, so a proxy forwards it and the next layer continues it;
  while the message is answered the span is current in the task that read it, so the
  handler's own spans (a model call, a tool) are its children;
- the server decides: one sampling decision per connection covers the session and every
  message; the client's flags decide nothing (otel.sampling, otel.propagation);
- a close after the session with an error code leaves a `chat.close` span in the session
  trace; messages still open when the connection ends fail with `no_reply`.

A first hop (the client talks to it directly) records what the client's context was
(`chat.client.*`, for the audit); a hop behind one of ours continues the caller's decision.
An app that answers messages in a worker, deciding per message first, opens each one itself
(`message_at="app"`, `current_connection().open_message(frame)`); options can differ per
connection (`per_connection`: who decided, by the way it came in).
"""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from typing import Any, Literal
from urllib.parse import parse_qsl

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, Span, SpanContext, SpanKind, Status, StatusCode

from otel.names import Attr, Event, LinkRole, SpanName
from otel.propagation import (
    TRACEPARENT,
    ClientParent,
    TraceIds,
    client_parent,
    extract_headers,
    extract_untrusted,
    gateway_links,
    w3c_carrier,
)
from otel.redaction import redact_url
from otel.sampling import decide, with_decision
from otel.stream import TokenClock
from otel.websocket.codec import OMNI2, FrameCodec, set_path

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

tracer = trace.get_tracer(__name__)

# Close codes that end a connection without anything to report.
_QUIET_CLOSES = frozenset({1000, 1001})


@dataclass
class _Message:
    span: Span
    trace_id: str
    token_frames: int = 0
    # Taken even when the span is not recorded: the first-token hook sees every message.
    started: float = field(default_factory=time.perf_counter)
    # The token frames' times for the span's `chat.stream.*` (only when it is recorded).
    clock: TokenClock | None = None


@dataclass
class ConnectionTrace:
    """One WebSocket connection's tracing: found by the `websockets` client instrumentation
    through `current_connection` to put its upstream connect under the session."""

    tracing: ChatTracing
    session: Span
    keep: bool
    session_open: bool = True
    upstream: SpanContext | None = None  # the upstream connect span, which messages link to
    gateway: SpanContext | None = None  # the span of the hop in front of us, if any
    ids: dict[str, str] = field(default_factory=dict)  # conversation and user, once known
    pending: deque[_Message] = field(default_factory=deque)

    @property
    def session_context(self) -> Context:
        return trace.set_span_in_context(self.session)

    def end_session(self, code: int | None = None, reason: str = "") -> None:
        if not self.session_open:
            return
        self.session_open = False
        if code is not None and code not in _QUIET_CLOSES:
            self.session.set_attributes({Attr.CLOSE_CODE: code, Attr.CLOSE_REASON: reason})
            self.session.set_status(Status(StatusCode.ERROR, reason or f"closed with {code}"))
        self.session.set_attributes(self.ids)
        self.session.end()

    # -- frames from the client ----------------------------------------------------------

    def client_text(self, text: str) -> str:
        """Trace a client frame; what to hand on (rewritten when it opens a message): to the
        app as it reads it, or upstream as a proxy forwards it (`message_at`)."""
        codec = self.tracing.codec
        if len(text) > self.tracing.max_frame_chars:
            return text
        frame = _json_object(text)
        if frame is None or codec.kind(frame) not in codec.opens:
            return text
        span = self.open_message(frame)
        codec.with_carrier(frame, w3c_carrier(span))
        # Current in the task that read it: the handler's spans for this message nest here.
        otel_context.attach(trace.set_span_in_context(span))
        return json.dumps(frame, ensure_ascii=False)

    def open_message(self, frame: dict[str, Any]) -> Span:
        """Start the message a frame opens (its context continued or recorded, as decided);
        it ends with the frame that ends it. With `message_at="app"` the app calls this as
        it takes the message up, and makes the span current where it answers it."""
        self.end_session()
        span = self.message_span(frame)
        clock = TokenClock() if span.is_recording() else None
        trace_id = f"{span.get_span_context().trace_id:032x}"
        self.pending.append(_Message(span, trace_id, clock=clock))
        return span

    def message_span(self, frame: dict[str, Any]) -> Span:
        """A span for a message `frame` as this connection traces one (parent, links, ids):
        also for a message the app answers itself, such as a proxy's refusal."""
        parent = self._message_parent(frame)
        return tracer.start_span(
            self.tracing.message_span,
            context=parent.context,
            kind=SpanKind.SERVER,
            links=[*self._links(), *parent.links],
            attributes={**self.ids, **parent.attributes},
        )

    def _message_parent(self, frame: dict[str, Any]) -> ClientParent:
        carrier = self.tracing.codec.carrier(frame)
        if self.tracing.first_hop:
            return client_parent(
                carrier,
                keep=self.keep,
                link=self.tracing.client_trace == "link",
                trace_ids=self.tracing.trace_ids,
            )
        # Behind a hop of ours, whose context it is; its decision is the connection's.
        return ClientParent(with_decision(extract_untrusted(carrier), self.keep), [], {})

    def _links(self) -> list[Link]:
        if self.upstream is not None:
            return [Link(self.upstream, {Attr.LINK_ROLE: LinkRole.UPSTREAM_CONNECT})]
        if self.gateway is not None:
            return [Link(self.gateway, {Attr.LINK_ROLE: LinkRole.GATEWAY})]
        return []

    # -- frames from the server ----------------------------------------------------------

    def server_text(self, text: str) -> str:
        """Observe a server frame; what to send (an ending frame gets its trace id)."""
        codec = self.tracing.codec
        if codec.is_stream_text(text):
            self._token()
            return text
        self.end_session()
        if len(text) > self.tracing.max_frame_chars:
            return text
        frame = _json_object(text)
        if frame is None:
            return text
        self._remember_ids(frame)
        kind = codec.kind(frame)
        if kind in codec.streams:
            self._token()
        elif kind is not None and kind in codec.ends:
            return self._end(frame, kind, text)
        return text

    def _remember_ids(self, frame: dict[str, Any]) -> None:
        codec = self.tracing.codec
        for path, attr in (
            (codec.conversation_path, Attr.CONVERSATION_ID),
            (codec.user_path, Attr.USER_ID),
        ):
            if (value := codec.text(frame, path)) is not None:
                self.ids[attr] = value

    def _token(self) -> None:
        if not self.pending:
            return
        message = self.pending[0]  # a connection's answers come in order
        if message.token_frames == 0:
            message.span.add_event(Event.FIRST_TOKEN)
            if self.tracing.on_first_token is not None:
                self.tracing.on_first_token(time.perf_counter() - message.started)
        message.token_frames += 1
        if message.clock is not None:
            message.clock.mark()

    def _end(self, frame: dict[str, Any], kind: str, text: str) -> str:
        codec = self.tracing.codec
        named = codec.text(frame, codec.reply_trace_path)
        message = self._take(named)
        if message is None:
            return text
        span = message.span
        span.set_attributes(
            self.ids | {Attr.TOKEN_FRAMES: message.token_frames, Attr.FRAME_TYPE: kind}
        )
        if message.clock is not None:
            span.set_attributes(message.clock.attributes())
        if kind in codec.fails and not _failed(span):  # the app's own account of it wins
            code = codec.text(frame, codec.error_code_path) or "error"
            span.set_attribute(Attr.ERROR_TYPE, code)
            error = codec.text(frame, codec.error_text_path) or kind
            span.set_status(Status(StatusCode.ERROR, error[:200]))
        span.end()
        if not self.pending:
            otel_context.attach(self.session_context)  # the reader's task, between messages
        if named is not None:
            return text
        # The reply names its trace, so a client can link an answer to it.
        set_path(frame, codec.reply_trace_path, message.trace_id)
        return json.dumps(frame, ensure_ascii=False)

    def _take(self, trace_id: str | None) -> _Message | None:
        if trace_id is None:
            if not self.tracing.end_unnamed:
                return None
            return self.pending.popleft() if self.pending else None
        for message in self.pending:
            if message.trace_id == trace_id:
                self.pending.remove(message)
                return message
        return None

    # -- the end -------------------------------------------------------------------------

    def closed(self, code: int | None, reason: str, by: Literal["server", "client"]) -> None:
        """The connection ended: a refusal ends the session with it, a later error close
        leaves a `chat.close` span, unanswered messages fail."""
        if self.session_open:
            self.end_session(code, reason)
        elif (
            self.tracing.record_closes
            and code is not None
            and code not in _QUIET_CLOSES
            and code != 1005
        ):
            span = tracer.start_span(
                SpanName.CLOSE,
                context=self.session_context,
                attributes=self.ids
                | {Attr.CLOSE_CODE: code, Attr.CLOSE_REASON: reason, Attr.CLOSE_BY: by},
            )
            span.set_status(Status(StatusCode.ERROR, reason or f"closed with {code}"))
            span.end()
        while self.pending:
            message = self.pending.popleft()
            span = message.span
            span.set_attributes(self.ids | {Attr.TOKEN_FRAMES: message.token_frames})
            if message.clock is not None:
                span.set_attributes(message.clock.attributes())
            if not _failed(span):  # the app may have said why (the client went away)
                span.set_attribute(Attr.ERROR_TYPE, "no_reply")
                span.set_status(Status(StatusCode.ERROR, "connection closed before the reply"))
            span.end()


_CONNECTION: ContextVar[ConnectionTrace | None] = ContextVar("chat_connection", default=None)


def current_connection() -> ConnectionTrace | None:
    """The traced WebSocket connection whose handler is running, if any."""
    return _CONNECTION.get()


@dataclass
class ChatTracing:
    """How a server's chat WebSocket is traced (the middleware's options)."""

    codec: FrameCodec = OMNI2
    paths: tuple[str, ...] = ("/ws/chat",)
    message_span: str = SpanName.RELAY
    connect_span: str = SpanName.CONNECT
    # A first hop: clients talk to it directly, their context is recorded and the server
    # decides (sample_ratio). Not: a hop of ours in front decided, its headers are trusted.
    first_hop: bool = True
    sample_ratio: float = 1.0
    client_trace: Literal["continue", "link"] = "continue"
    max_frame_chars: int = 64 * 1024  # larger frames are passed on without being read
    # Where a message span starts: when the app reads the frame ("receive"), or when a proxy
    # forwards it with the `websockets` client ("forward"): then a frame the proxy refuses or
    # answers itself is not a message trace (the proxy traces its refusal if it wants one);
    # or when the app takes it up ("app": `current_connection().open_message(frame)`, for
    # an app that queues messages and decides before answering one).
    message_at: Literal["receive", "forward", "app"] = "receive"
    trace_ids: TraceIds = field(default_factory=TraceIds)
    # What stands in front of a first hop: nothing ("none": the client's context from the
    # headers or the query); a gateway that starts a trace of its own and cannot read the
    # query ("link": the client's context from the query, the session links to the gateway's
    # span); a trusted gateway that stripped the client's context ("parent": the session is
    # the gateway span's child, traced as this server decides, and messages link to it).
    gateway: Literal["none", "link", "parent"] = "none"
    # An ending frame that does not name its message's trace ends the oldest message. Not
    # when the backend always names it and the proxy writes frames of its own (refusals).
    end_unnamed: bool = True
    # Whether a connection is traced at all, decided before any span: a refusal of a flood
    # is not worth a trace per connect (the handler still answers it).
    traced: Callable[[Scope], bool] | None = None
    # Called with the seconds from a message's start to its first token (a metric).
    on_first_token: Callable[[float], None] | None = None
    # A `chat.close` span for an error close after the session; off for an app that records
    # its own closes.
    record_closes: bool = True
    # Options for one connection, over these (e.g. `first_hop` by the way it came in).
    per_connection: Callable[[Scope], Mapping[str, Any]] | None = None


class ChatTracingMiddleware:
    """ASGI middleware: `app.add_middleware(ChatTracingMiddleware, message_span=...)`."""

    def __init__(self, app: ASGIApp, **options: Any) -> None:
        self.app = app
        self.tracing = ChatTracing(**options)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "websocket"
            or scope.get("path") not in self.tracing.paths
            or (self.tracing.traced is not None and not self.tracing.traced(scope))
        ):
            await self.app(scope, receive, send)
            return
        connection = self._start(scope)
        token = _CONNECTION.set(connection)
        attached = otel_context.attach(connection.session_context)
        closed: list[tuple[int | None, str, Literal["server", "client"]]] = []

        async def traced_receive() -> Message:
            message = await receive()
            kind = message.get("type")
            if (
                kind == "websocket.receive"
                and connection.tracing.message_at == "receive"
                and isinstance(message.get("text"), str)
            ):
                text = connection.client_text(message["text"])
                if text is not message["text"]:
                    message = {**message, "text": text}
            elif kind == "websocket.disconnect" and not closed:
                closed.append((message.get("code"), message.get("reason") or "", "client"))
            return message

        async def traced_send(message: Message) -> None:
            kind = message.get("type")
            if kind == "websocket.send" and isinstance(message.get("text"), str):
                text = connection.server_text(message["text"])
                if text is not message["text"]:
                    message = {**message, "text": text}
            elif kind == "websocket.close" and not closed:
                closed.append((message.get("code", 1000), message.get("reason") or "", "server"))
            await send(message)

        try:
            await self.app(scope, traced_receive, traced_send)
        finally:
            code, reason, by = closed[0] if closed else (None, "", "server")
            connection.closed(code, reason, by)
            otel_context.detach(attached)
            _CONNECTION.reset(token)

    def _start(self, scope: Scope) -> ConnectionTrace:
        tracing = self.tracing
        if tracing.per_connection is not None:
            tracing = replace(tracing, **tracing.per_connection(scope))
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
        url = _url(scope)
        links: list[Link] = []
        gateway = None
        if not tracing.first_hop or tracing.gateway == "parent":
            # Under the span in front of us: a hop of ours decided (its flag), a trusted
            # gateway did not (we do).
            ctx = extract_headers(headers)
            gateway = trace.get_current_span(ctx).get_span_context()
            if tracing.first_hop:
                keep = decide(tracing.sample_ratio)
            else:
                keep = gateway.trace_flags.sampled if gateway.is_valid else True
            parent = ClientParent(with_decision(ctx, keep), [], {})
        else:
            keep = decide(tracing.sample_ratio)
            # A browser cannot set headers on a WebSocket: its context rides in the query.
            client_headers = TRACEPARENT in headers and tracing.gateway == "none"
            parent = client_parent(
                headers if client_headers else query,
                keep=keep,
                link=tracing.client_trace == "link",
                trace_ids=tracing.trace_ids,
            )
            if tracing.gateway == "link":
                links = gateway_links(headers)
        session = tracer.start_span(
            tracing.connect_span,
            context=parent.context,
            kind=SpanKind.SERVER,
            links=[*parent.links, *links],
            attributes={Attr.URL_FULL: redact_url(url), **parent.attributes},
        )
        connection = ConnectionTrace(tracing, session, keep)
        if gateway is not None and gateway.is_valid:
            connection.gateway = gateway
        return connection


def _url(scope: Scope) -> str:
    host = next((v for k, v in scope["headers"] if k == b"host"), b"").decode("latin-1")
    query = scope.get("query_string", b"").decode("latin-1")
    scheme = scope.get("scheme", "ws")
    return f"{scheme}://{host}{scope.get('path', '')}" + (f"?{query}" if query else "")


def _failed(span: Span) -> bool:
    """Whether the span already says it failed (an SDK span tells its status)."""
    status = getattr(span, "status", None)
    return status is not None and status.status_code is StatusCode.ERROR


def _json_object(text: str) -> dict[str, Any] | None:
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None
