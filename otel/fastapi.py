"""FastAPI's native telemetry, configured for our services.

FastAPI (>=0.16x) emits HTTP server spans itself once a global provider is set, so we do not
add the contrib ASGI middleware (that would record each request twice). WebSocket scopes are
excluded: a connection lives for minutes and its frames are traced by our own spans.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

from fastapi.telemetry import TelemetryConfig


def _is_websocket(scope: MutableMapping[str, Any]) -> bool:
    return bool(scope.get("type") == "websocket")


def telemetry_config() -> TelemetryConfig:
    return {
        "exclude": _is_websocket,
        "operation_spans": False,  # dependency/serialisation spans are noise here
        "metrics": False,
        "logs": False,
    }
