"""Run a service's ASGI app with uvicorn, our logging, and a short graceful shutdown."""

from __future__ import annotations

import uvicorn
from fastapi import FastAPI

from otel.logs import logging_config


def serve(app: FastAPI, host: str, port: int, log_level: str = "INFO") -> None:
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_config=logging_config(log_level.upper()),
        ws="websockets-sansio",
        # An open WebSocket would otherwise hold shutdown for a long time.
        timeout_graceful_shutdown=2,
        proxy_headers=False,
    )
