"""Refusing a WebSocket so the client learns why: accept, record on the span, close with 4xxx.

Closing before `accept()` reaches a browser as a bare HTTP 403 with no reason at all.
"""

from __future__ import annotations

import contextlib

from opentelemetry.trace import Span, Status, StatusCode
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from otel.names import Attr
from services.common.protocol import Refusal, close_reason


async def refuse(websocket: WebSocket, span: Span, refusal: Refusal) -> None:
    span.set_attributes(
        {
            Attr.ERROR_TYPE: refusal.error_type,
            Attr.CLOSE_CODE: int(refusal.code),
            Attr.CLOSE_REASON: refusal.reason,
        }
    )
    span.set_status(Status(StatusCode.ERROR, refusal.reason))
    # The client may already be gone; there is nobody left to tell then.
    with contextlib.suppress(OSError, RuntimeError, WebSocketDisconnect):
        if websocket.application_state is WebSocketState.CONNECTING:
            await websocket.accept()
        await websocket.close(code=refusal.code, reason=close_reason(refusal.reason))
