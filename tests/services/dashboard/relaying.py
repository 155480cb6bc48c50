"""The dashboard's connection as its tracing middleware (otel.websocket) configures it, with
its message checks: frames go through it one way and the other as the proxy relays them."""

from __future__ import annotations

import contextvars

from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from otel.propagation import TraceIds
from otel.websocket import ChatTracing, ConnectionTrace
from otel.websocket.instrument import ROLES
from services.common.churn import Churn
from services.dashboard.app import chat_tracing
from services.dashboard.relay import MessageGate
from services.dashboard.settings import DashboardSettings

CLIENT_TRACE = "0af7651916cd43dd8448eb211c80319c"
CLIENT_SPAN = "b7ad6b7169203331"
SESSION = SpanContext(0x9999, 0x8888, is_remote=False, trace_flags=TraceFlags(1))
UPSTREAM = SpanContext(0x1234, 0x5678, is_remote=False, trace_flags=TraceFlags(1))


class Relay:
    """One dashboard connection after its session: frames to and from OMNI2."""

    def __init__(self, keep: bool, link: bool, max_pending: int) -> None:
        settings = DashboardSettings(  # type: ignore[call-arg]
            OMNI_JWT_SECRET="s" * 32,
            client_trace="link" if link else "continue",
            max_pending_messages=max_pending,
        )
        churn = Churn.of(settings)
        options = ROLES["proxy"] | chat_tracing(settings, churn, TraceIds())
        self.connection = ConnectionTrace(
            ChatTracing(**options), NonRecordingSpan(SESSION), keep, session_open=False
        )
        self.connection.upstream = UPSTREAM
        self.gate = MessageGate(self.connection, max_pending=max_pending, churn=churn, user="u")
        self._context = contextvars.copy_context()  # the connection's task

    def to_upstream(self, text: str) -> str:
        self.gate.check(text)
        return self._context.run(self.connection.client_text, text)

    def from_upstream(self, text: str) -> None:
        self.gate.observe(text)
        self._context.run(self.connection.server_text, text)

    def close(self, reason: str) -> None:
        self._context.run(self.connection.closed, 1000, reason, "client")
