"""HTTP server spans of our FastAPI services, from opentelemetry-instrumentation-fastapi.

FastAPI (>=0.16x) has telemetry of its own; it is switched off here (`telemetry_config`), so
that each request is recorded once, by the maintained instrumentation. Not traced by it:
health checks (polled all the time), WebSocket routes (a connection lives for minutes and our
own spans trace it and each of its messages) and, at the chat page's server, the static
files of the page (every load would leave a trace per file); the instrumentation's
per-message `http send`/`http receive` spans are left out too.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from fastapi import FastAPI
from fastapi.telemetry import TelemetryConfig
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

# The stable HTTP semantic conventions (http.request.method, url.path, ...), not the old ones
# (http.method, http.target), as the rest of our spans and the names table use.
_SEMCONV = "OTEL_SEMCONV_STABILITY_OPT_IN"
EXCLUDED_ALWAYS = ("/healthz$",)
STATIC_FILES = (r"\.(html|js|css|map|png|svg|ico|json\.map)$", r"/$")


def telemetry_config() -> TelemetryConfig:
    """FastAPI's own telemetry, off: the instrumentation records the requests."""
    return {"tracing": False, "metrics": False, "logs": False, "operation_spans": False}


def instrument(app: FastAPI, *, websocket_paths: Iterable[str] = (), static: bool = False) -> None:
    """One SERVER span per HTTP request, named `<method> <route>`, as a child of the caller's
    context (Traefik's ForwardAuth passes its traceparent to /verify)."""
    os.environ.setdefault(_SEMCONV, "http")
    excluded = [*EXCLUDED_ALWAYS, *(f"{path}$" for path in websocket_paths)]
    if static:
        excluded += STATIC_FILES
    # The URL the patterns are searched in holds no query string.
    FastAPIInstrumentor.instrument_app(
        app, excluded_urls=",".join(excluded), exclude_spans=["receive", "send"]
    )
