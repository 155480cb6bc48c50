"""Dashboard backend: `/api/login` issues the JWT, `/ws/chat` proxies to Traefik."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, WebSocket
from fastapi.middleware.cors import CORSMiddleware

from otel.instrumentation import instrument, telemetry_config
from otel.metrics import chat_metrics
from otel.propagation import TraceIds
from otel.websocket import instrument_chat_server
from services.common.churn import Churn
from services.dashboard.login import UserStore, dashboard_database, login_router
from services.dashboard.proxy import connect_attempt, proxy_chat
from services.dashboard.refusal_log import RefusalLog
from services.dashboard.settings import DashboardSettings
from services.dashboard.token_query import TokenFromQuery


def chat_tracing(settings: DashboardSettings, churn: Churn, trace_ids: TraceIds) -> dict[str, Any]:
    """How the dashboard traces its chat WebSocket (otel.websocket's options)."""
    return {
        "message_span": settings.relay_span_name,
        "sample_ratio": settings.trace_sample_ratio,
        "client_trace": settings.client_trace,
        "trace_ids": trace_ids,
        # Behind Traefik's front entry point (replicas), which starts a trace of its own.
        "gateway": "link" if settings.behind_gateway else "none",
        # OMNI2 names the trace of every answer; the frames the dashboard writes itself
        # (refusals) end no relayed message.
        "end_unnamed": False,
        # A user over the connect rate past their refusal budget: counted, not traced.
        "traced": lambda scope: connect_attempt(scope, settings, churn).traced,
        "on_first_token": lambda seconds: chat_metrics().first_token(seconds),
    }


def create_app(settings: DashboardSettings) -> FastAPI:
    # One engine for the process: the login reads users there, refusals go to the audit trail.
    db = dashboard_database(settings.database_url.get_secret_value(), settings.database_timeout_s)
    refusals = RefusalLog(db)
    # Trace ids clients' context started here, so that none is joined twice (propagation).
    trace_ids = TraceIds(settings.trace_id_memory)
    # What one user's connects and refusals may cost the trace store (churn.py).
    churn = Churn.of(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        flusher = asyncio.create_task(churn.refusals.run())
        yield
        flusher.cancel()
        await asyncio.gather(flusher, return_exceptions=True)
        await db.dispose()

    app = FastAPI(title="dashboard-backend", telemetry=telemetry_config(), lifespan=lifespan)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.allowed_origins,
        allow_methods=["GET", "POST"],
        allow_headers=["Content-Type", "traceparent"],
        expose_headers=["Retry-After"],  # the page says when a refused login may try again
    )
    # The chat's session and message spans (otel.websocket): the proxy role, the first hop.
    instrument_chat_server(app, role="proxy", **chat_tracing(settings, churn, trace_ids))
    # Outermost: the token leaves the query before any other layer sees the URL.
    app.add_middleware(TokenFromQuery)
    app.include_router(login_router(settings, store=UserStore(db, settings.database_timeout_s)))

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.websocket("/ws/chat")
    async def ws_chat(websocket: WebSocket) -> None:
        await proxy_chat(websocket, settings, refusals, churn)

    instrument(app, websocket_paths=("/ws/chat",))
    return app
