"""Run a service's ASGI app with uvicorn, our logging, frame limits and a short graceful
shutdown."""

from __future__ import annotations

import gc
from typing import Protocol

import uvicorn
from starlette.applications import Starlette
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from otel.logs import logging_config


class WebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O WebSocket protocol, plus one fix: an upgrade request that websockets
    refuses while parsing it (request line over 8 KiB: 414, header fields too large: 431)
    gets that answer at once. uvicorn writes only after a complete request, so the refusal
    sat in the buffer and the client waited until it gave up."""

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if not self.handshake_initiated and self.conn.handshake_exc is not None:
            self.transport.write(b"".join(self.conn.data_to_send()))
            self.transport.close()


# Collect the youngest generation every 7,000 net allocations instead of 700.
GC_THRESHOLDS = (7000, 20, 20)


def tune_gc() -> None:
    """Move what start-up made into the permanent generation, and collect less often.

    Modules, the app and settings are never garbage, yet every full collection walked them.
    The default thresholds also collect very often under load. In a burst of 400 connections,
    this cut OMNI2's CPU per connection and message by about 13%, with tracing on and off
    alike (docs/performance.md).
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


class ServerSettings(Protocol):
    host: str
    port: int
    log_level: str
    max_frame_bytes: int


def serve(app: Starlette, settings: ServerSettings) -> None:
    tune_gc()
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_config=logging_config(settings.log_level.upper()),
        ws=WebSocketProtocol,
        # A larger frame closes the connection with 1009 before the app sees it.
        ws_max_size=settings.max_frame_bytes,
        # Chat frames are small (a token frame is about 50 bytes): compressing each one costs
        # CPU (zlib was a share of the dashboard's profile under load) and saves nothing.
        ws_per_message_deflate=False,
        # An open WebSocket would otherwise hold shutdown for a long time.
        timeout_graceful_shutdown=2,
        proxy_headers=False,
    )
