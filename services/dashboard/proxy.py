"""`/ws/chat`: connect upstream first, then accept the browser and relay frames both ways."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from opentelemetry import trace
from opentelemetry.trace import SpanKind
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState
from websockets.exceptions import ConnectionClosed

from otel.names import Attr, SpanName
from otel.propagation import extract_untrusted
from otel.redaction import redact_url
from services.common.protocol import CloseCode, close_reason
from services.common.refusal import Refusal, refuse
from services.dashboard.relay import MessageRelay
from services.dashboard.settings import DashboardSettings
from services.dashboard.upstream import Upstream, connect_upstream

log = logging.getLogger(__name__)
tracer = trace.get_tracer(__name__)

# Codes that may not be sent in a close frame (RFC 6455 7.4.1): they only report.
_RESERVED = {1005, 1006, 1015}


def sendable(code: int | None, fallback: CloseCode) -> int:
    if code is None or code in _RESERVED or not (1000 <= code <= 4999):
        return int(fallback)
    return code


async def proxy_chat(websocket: WebSocket, settings: DashboardSettings) -> None:
    params = websocket.query_params
    with tracer.start_as_current_span(
        SpanName.CONNECT,
        context=extract_untrusted(params),
        kind=SpanKind.SERVER,
        record_exception=False,
        attributes={Attr.URL_FULL: redact_url(str(websocket.url))},
    ) as span:
        token = params.get("token")
        try:
            if not token:
                raise Refusal(CloseCode.UNAUTHENTICATED, "missing token", "missing_token")
            upstream = await connect_upstream(
                settings.upstream_ws_url, token, settings.upstream_open_timeout_s
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
            await upstream.connection.close()
            return
    await relay_frames(websocket, upstream)


async def relay_frames(websocket: WebSocket, upstream: Upstream) -> None:
    relay = MessageRelay(upstream.span_context)
    connection = upstream.connection

    async def browser_to_upstream() -> None:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                code = sendable(message.get("code"), CloseCode.NORMAL)
                await connection.close(code=code, reason=message.get("reason") or "")
                return
            if message.get("text") is not None:
                await connection.send(relay.to_upstream(message["text"]))
            elif message.get("bytes") is not None:
                await connection.send(message["bytes"])

    async def upstream_to_browser() -> None:
        with contextlib.suppress(ConnectionClosed):
            async for frame in connection:
                if isinstance(frame, str):
                    relay.from_upstream(frame)
                    await websocket.send_text(frame)
                else:
                    await websocket.send_bytes(frame)
        code = connection.close_code
        if code in (None, 1006):
            code, reason = CloseCode.GATEWAY_UNREACHABLE, "chat service connection lost"
        else:
            reason = connection.close_reason or ""
        if websocket.client_state is WebSocketState.CONNECTED:
            await websocket.close(
                code=sendable(code, CloseCode.GATEWAY_UNREACHABLE), reason=close_reason(reason)
            )

    tasks = [
        asyncio.create_task(browser_to_upstream()),
        asyncio.create_task(upstream_to_browser()),
    ]
    try:
        _, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(
                asyncio.CancelledError, ConnectionClosed, WebSocketDisconnect, RuntimeError, OSError
            ):
                await task
    finally:
        relay.close("connection closed before the reply")
        await connection.close()
