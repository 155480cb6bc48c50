"""Per-message tracing for WebSocket chat stacks, added to existing code by one call per
service: the server side at the ASGI level (`ChatTracingMiddleware`), the `websockets`
client's handshake (`instrument_websockets_client`), and a `FrameCodec` that says what a
message is in a chat protocol (OMNI2's by default)."""

from otel.websocket.client import instrument_websockets_client, uninstrument_websockets_client
from otel.websocket.codec import OMNI2, FrameCodec
from otel.websocket.instrument import instrument_chat_server
from otel.websocket.server import (
    ChatTracing,
    ChatTracingMiddleware,
    ConnectionTrace,
    current_connection,
)

__all__ = [
    "OMNI2",
    "ChatTracing",
    "ChatTracingMiddleware",
    "ConnectionTrace",
    "FrameCodec",
    "current_connection",
    "instrument_chat_server",
    "instrument_websockets_client",
    "uninstrument_websockets_client",
]
