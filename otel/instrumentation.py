"""The maintained OpenTelemetry instrumentation our services use, configured in one place.

- opentelemetry-instrumentation-fastapi: the HTTP server spans of every FastAPI service.
  FastAPI (>=0.16x) has telemetry of its own; it is switched off (`telemetry_config`), so
  that each request is recorded once. Not traced: health checks (polled all the time),
  WebSocket routes (a connection lives for minutes; our own spans trace it and each of its
  messages) and, at the chat page's server, the page's static files (every load would leave
  a trace per file); nor the per-message `http send`/`http receive` spans.
- opentelemetry-instrumentation-httpx: the CLIENT span of each request of the model providers'
  SDKs (on httpx2), under the `chat <model>` span; headers, so keys, are not recorded.
- opentelemetry-instrumentation-sqlalchemy: SQL spans of OMNI2's database, off by default
  (OMNI2_SQL_SPANS). It declares SQLAlchemy < 2.1 and refuses 2.1 by that range alone; it
  works with 2.1 (a test runs it on our pinned version), so the range check is skipped.

All emit the stable semantic conventions (http.request.method, db.query.text), as the rest of
our spans and the names table do. The instrumentations read that choice once per process, at
the first of them: every one goes through `_stable_conventions` here first.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TYPE_CHECKING

from fastapi import FastAPI
from fastapi.telemetry import TelemetryConfig
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

if TYPE_CHECKING:
    import httpx2
    from sqlalchemy.ext.asyncio import AsyncEngine

# Read once per process by the first instrumentation: both conventions are asked for here.
_SEMCONV = "OTEL_SEMCONV_STABILITY_OPT_IN"
_STABLE = "http,database"
EXCLUDED_ALWAYS = ("/healthz$",)
STATIC_FILES = (r"\.(html|js|css|map|png|svg|ico|json\.map)$", r"/$")


def _stable_conventions() -> None:
    os.environ.setdefault(_SEMCONV, _STABLE)


def telemetry_config() -> TelemetryConfig:
    """FastAPI's own telemetry, off: the instrumentation records the requests."""
    return {"tracing": False, "metrics": False, "logs": False, "operation_spans": False}


def instrument(app: FastAPI, *, websocket_paths: Iterable[str] = (), static: bool = False) -> None:
    """One SERVER span per HTTP request, named `<method> <route>`, as a child of the caller's
    context (Traefik's ForwardAuth passes its traceparent to /verify)."""
    _stable_conventions()
    excluded = [*EXCLUDED_ALWAYS, *(f"{path}$" for path in websocket_paths)]
    if static:
        excluded += STATIC_FILES
    # The URL the patterns are searched in holds no query string.
    FastAPIInstrumentor.instrument_app(
        app, excluded_urls=",".join(excluded), exclude_spans=["receive", "send"]
    )


def instrument_engine(engine: AsyncEngine) -> None:
    """A CLIENT span per SQL statement (its text with placeholders, never the values), under
    the span that ran it (chat.persist, a check)."""
    # Imported here, as is the httpx one below: the services without a database or a model
    # provider (auth, the chat page's server) then start without SQLAlchemy, a quarter of
    # their start-up CPU.
    from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

    _stable_conventions()
    SQLAlchemyInstrumentor().instrument(engine=engine.sync_engine, skip_dep_check=True)


def instrument_http_client(client: httpx2.AsyncClient) -> None:
    """A CLIENT span per request of this client, under the current span."""
    from opentelemetry.instrumentation.httpx import HTTPX2ClientInstrumentor

    _stable_conventions()
    # (typed for httpx clients only; the httpx2 instrumentor takes httpx2 ones)
    HTTPX2ClientInstrumentor.instrument_client(client)  # type: ignore[arg-type]
