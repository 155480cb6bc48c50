"""The OMNI2 backend, as the origin project writes it: the user from the gateway's header, a
welcome, then per message `token` frames and `done`. Tracing: the one call in `serve`."""

from __future__ import annotations

import asyncio
import os
import uuid

from fastapi import FastAPI, WebSocket, WebSocketDisconnect

from otel.setup import setup_tracing
from otel.websocket import instrument_chat_server
from tests.whole_stack.origin.protocols import codec_of

PROTOCOL = os.environ.get("ORIGIN_PROTOCOL", "omni2")
# A pause in the answer, so that a stall would show (tests set it).
STALL_S = float(os.environ.get("ORIGIN_STALL_S", "0"))

app = FastAPI(telemetry={"tracing": False, "metrics": False, "logs": False})


@app.websocket("/ws/chat")
async def chat_websocket(websocket: WebSocket) -> None:
    user_id = websocket.headers.get("x-user-id")
    if not user_id:
        await websocket.close(code=1008, reason="Missing X-User-Id header")
        return
    await websocket.accept()
    conversation_id = str(uuid.uuid4())
    try:
        if PROTOCOL == "acme":
            await _acme(websocket, conversation_id)
        else:
            await _omni2(websocket, user_id, conversation_id)
    except WebSocketDisconnect:
        pass


async def _omni2(websocket: WebSocket, user_id: str, conversation_id: str) -> None:
    await websocket.send_json(
        {
            "type": "welcome",
            "text": "Welcome!",
            "conversation_id": conversation_id,
            "user_id": user_id,
        }
    )
    while True:
        message_data = await websocket.receive_json()
        if message_data.get("type") != "message":
            await websocket.send_json({"type": "error", "error": "Invalid message type"})
            continue
        words = f"You said: {message_data.get('text', '')}".split()
        for word in words:
            await websocket.send_json({"type": "token", "text": word + " "})
            await asyncio.sleep(STALL_S)
        await websocket.send_json(
            {
                "type": "done",
                "result": {"tokens_used": len(words), "tools_used": [], "tool_calls": 0},
            }
        )


async def _acme(websocket: WebSocket, conversation_id: str) -> None:
    await websocket.send_json({"op": "hello", "session": {"conversation": conversation_id}})
    while True:
        ask = await websocket.receive_json()
        if ask.get("op") != "ask":
            await websocket.send_json({"op": "fail", "why": "unknown op"})
            continue
        for word in str(ask.get("q", "")).split():
            await websocket.send_json({"op": "chunk", "data": word})
        await websocket.send_json({"op": "end", "meta": {}})


def serve() -> FastAPI:
    """`uvicorn --factory tests.whole_stack.origin.backend:serve`: the app, traced by one call."""
    setup_tracing(os.environ.get("OTEL_SERVICE_NAME", "omni2"))
    instrument_chat_server(app, role="backend", **codec_of(PROTOCOL))
    return app
