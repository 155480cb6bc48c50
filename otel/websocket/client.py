"""The `websockets` client's handshake, traced: a proxy's upstream connection.

`instrument_websockets_client()` wraps the handshake of every `websockets.connect(...)` (the
asyncio client, however it is imported): an `upstream connect` CLIENT span whose context
rides in the handshake's headers (the global propagators: W3C `traceparent` by default), a
failed handshake recorded with its HTTP status or error. Inside a traced server connection
(otel.websocket.server) the span is a child of its session span, and that connection's
message spans link to it. With `message_at="forward"` (a proxy's default) a message span
starts as the proxy sends the frame upstream, and the frame goes with that span's context.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from websockets.asyncio.client import ClientConnection, connect
from websockets.datastructures import Headers
from websockets.exceptions import InvalidStatus

from otel.names import Attr, SpanName
from otel.redaction import peer_attributes
from otel.websocket.server import current_connection

tracer = trace.get_tracer(__name__)

_ORIGINAL = "_omni_trace_original"


def websockets_client_instrumented() -> bool:
    return hasattr(connect.connect, _ORIGINAL)


def instrument_websockets_client(span_name: str = SpanName.UPSTREAM_CONNECT) -> None:
    """Trace every `websockets` asyncio client handshake from now on, and the messages a
    traced proxy forwards (`message_at="forward"`); idempotent."""
    if websockets_client_instrumented():
        return
    handshake, send = connect.connect, ClientConnection.send

    @functools.wraps(handshake)
    async def traced_handshake(self: connect) -> ClientConnection:
        return await _traced_handshake(self, handshake, span_name)

    @functools.wraps(send)
    async def traced_send(self: ClientConnection, message: Any, *args: Any, **kw: Any) -> None:
        server = current_connection()
        forwarding = server is not None and server.tracing.message_at == "forward"
        if forwarding and isinstance(message, str):
            assert server is not None
            message = server.client_text(message)
        await send(self, message, *args, **kw)

    setattr(traced_handshake, _ORIGINAL, handshake)
    setattr(traced_send, _ORIGINAL, send)
    connect.connect = traced_handshake  # type: ignore[method-assign]
    ClientConnection.send = traced_send  # type: ignore[method-assign,assignment]


def uninstrument_websockets_client() -> None:
    for owner, name in ((connect, "connect"), (ClientConnection, "send")):
        original = getattr(getattr(owner, name), _ORIGINAL, None)
        if original is not None:
            setattr(owner, name, original)


async def _traced_handshake(
    handshake: connect,
    original: Callable[[connect], Awaitable[ClientConnection]],
    span_name: str,
) -> ClientConnection:
    with tracer.start_as_current_span(
        span_name,
        kind=SpanKind.CLIENT,
        record_exception=False,
        set_status_on_exception=False,
        attributes=peer_attributes(str(handshake.uri)),
    ) as span:
        headers = Headers(handshake.additional_headers or {})
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        for name, value in carrier.items():
            if name in headers:
                del headers[name]  # ours replaces what the caller may have copied along
            headers[name] = value
        handshake.additional_headers = headers
        try:
            connection = await original(handshake)
        except InvalidStatus as err:
            status = err.response.status_code
            span.set_attributes({Attr.HTTP_STATUS: status, Attr.ERROR_TYPE: str(status)})
            span.set_status(Status(StatusCode.ERROR, f"handshake answered HTTP {status}"))
            raise
        except Exception as err:  # refused, unreachable, timed out: recorded, then raised
            span.set_attribute(Attr.ERROR_TYPE, type(err).__name__)
            span.set_status(Status(StatusCode.ERROR, "handshake failed"))
            raise
        server = current_connection()
        if server is not None:
            server.upstream = span.get_span_context()
        return connection
