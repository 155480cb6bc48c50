"""One call per service: `instrument_chat_server(app, role=...)` at start-up."""

from __future__ import annotations

from typing import Any, Literal, Protocol

from otel.names import SpanName
from otel.websocket.client import instrument_websockets_client
from otel.websocket.server import ChatTracingMiddleware
from otel.websocket.settings import settings_from_environment

Role = Literal["proxy", "backend"]

# A proxy is the first hop: the client's context is recorded and the server decides what is
# traced, and a message is traced from when the proxy forwards it (a frame it refuses or
# answers itself is not a relayed message); a backend sits behind a hop of ours and
# continues its decision. A proxy whose upstream is not the `websockets` client passes
# message_at="receive".
ROLES: dict[Role, dict[str, Any]] = {
    "proxy": {"message_span": SpanName.RELAY, "first_hop": True, "message_at": "forward"},
    "backend": {"message_span": SpanName.TURN, "first_hop": False},
}


class _App(Protocol):
    def add_middleware(self, middleware_class: Any, *args: Any, **kwargs: Any) -> None: ...


def instrument_chat_server(app: _App, *, role: Role = "proxy", **options: Any) -> None:
    """Trace a Starlette/FastAPI app's chat WebSocket (`options`: ChatTracing's fields, such
    as `codec`, `paths`, `message_span`, `sample_ratio`, over the `OMNI_TRACE_WS_*`
    settings, over the role's defaults); a proxy's `websockets` client handshakes too. Call
    before the app starts serving; ValueError names a bad setting."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {sorted(ROLES)}, not {role!r}")
    configured = settings_from_environment().options()
    app.add_middleware(ChatTracingMiddleware, **(ROLES[role] | configured | options))
    if role == "proxy":
        instrument_websockets_client()
