"""The dashboard proxy, as the origin project writes it: accept, connect upstream with the
token as a bearer header, forward both ways. Tracing: the one call in `serve`."""

from __future__ import annotations

import asyncio
import os

import websockets
from fastapi import FastAPI, Query, WebSocket, WebSocketDisconnect

from otel.setup import setup_tracing
from otel.websocket import instrument_chat_server
from tests.whole_stack.origin.protocols import codec_of


def create_app(upstream_url: str) -> FastAPI:
    app = FastAPI(telemetry={"tracing": False, "metrics": False, "logs": False})

    @app.websocket("/ws/chat")
    async def chat_websocket_endpoint(
        websocket: WebSocket, token: str | None = Query(None)
    ) -> None:
        await websocket.accept()
        if not token:
            await websocket.close(code=1008, reason="No token provided")
            return
        headers = {"Authorization": f"Bearer {token}"}
        try:
            async with websockets.connect(upstream_url, additional_headers=headers) as omni2_ws:
                close_event = asyncio.Event()

                async def forward_from_omni2() -> None:
                    try:
                        async for message in omni2_ws:
                            await websocket.send_text(str(message))
                    finally:
                        close_event.set()

                async def forward_to_omni2() -> None:
                    try:
                        while not close_event.is_set():
                            data = await websocket.receive_text()
                            await omni2_ws.send(data)
                    except WebSocketDisconnect:
                        close_event.set()

                await asyncio.gather(
                    forward_from_omni2(), forward_to_omni2(), return_exceptions=True
                )
        except websockets.exceptions.WebSocketException as e:
            await websocket.close(code=1011, reason=f"Connection error: {str(e)[:50]}")

    return app


def serve() -> FastAPI:
    """`uvicorn --factory tests.whole_stack.origin.proxy:serve`: the app, traced by one call."""
    app = create_app(os.environ["ORIGIN_UPSTREAM_WS_URL"])
    setup_tracing(os.environ.get("OTEL_SERVICE_NAME", "dashboard-backend"))
    instrument_chat_server(
        app, role="proxy", **codec_of(os.environ.get("ORIGIN_PROTOCOL", "omni2"))
    )
    return app
