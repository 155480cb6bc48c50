"""The `websockets` client's handshake, traced: a proxy's upstream connection.

`instrument_websockets_client()` wraps the handshake of every `websockets.connect(...)` (the
asyncio client, however it is imported): an `upstream connect` CLIENT span whose context
rides in the handshake's headers (the global propagators: W3C `traceparent` by default), a
failed handshake recorded with its HTTP status or error. Inside a traced server connection
(otel.websocket.server) the span is a child of its session span, and that connection's
message spans link to it. Frames need nothing here: a message frame the server side read
already carries its message span's context, and a proxy forwards it as it is.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from websockets.asyncio.client import ClientConnection, connect
from websockets.datastructures import Headers
from websockets.exceptions import InvalidStatus

from otel.names import Attr, SpanName
from otel.redaction import redact_url
from otel.websocket.server import current_connection

tracer = trace.get_tracer(__name__)

_ORIGINAL = "_omni_trace_original"


def instrument_websockets_client(span_name: str = SpanName.UPSTREAM_CONNECT) -> None:
    """Trace every `websockets` asyncio client handshake from now on (idempotent)."""
    if hasattr(connect.connect, _ORIGINAL):
        return
    original = connect.connect

    @functools.wraps(original)
    async def traced(self: connect) -> ClientConnection:
        return await _traced_handshake(self, original, span_name)

    setattr(traced, _ORIGINAL, original)
    connect.connect = traced  # type: ignore[method-assign]


def uninstrument_websockets_client() -> None:
    original = getattr(connect.connect, _ORIGINAL, None)
    if original is not None:
        connect.connect = original  # type: ignore[method-assign]


async def _traced_handshake(
    handshake: connect,
    original: Callable[[connect], Awaitable[ClientConnection]],
    span_name: str,
) -> ClientConnection:
    url = str(handshake.uri)
    parts = urlsplit(url)
    with tracer.start_as_current_span(
        span_name,
        kind=SpanKind.CLIENT,
        record_exception=False,
        set_status_on_exception=False,
        attributes={
            Attr.URL_FULL: redact_url(url),
            Attr.SERVER_ADDRESS: parts.hostname or "",
            Attr.SERVER_PORT: parts.port or (443 if parts.scheme == "wss" else 80),
        },
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
