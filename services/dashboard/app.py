"""Dashboard backend: `/api/login` issues the JWT, `/ws/chat` proxies to Traefik."""

from __future__ import annotations

from fastapi import FastAPI, WebSocket
from fastapi.middleware.cors import CORSMiddleware

from otel.fastapi import telemetry_config
from services.dashboard.login import login_router
from services.dashboard.proxy import proxy_chat
from services.dashboard.settings import DashboardSettings


def create_app(settings: DashboardSettings) -> FastAPI:
    app = FastAPI(title="dashboard-backend", telemetry=telemetry_config())
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.cors_origins,
        allow_methods=["*"],
        allow_headers=["*"],
    )
    app.include_router(login_router(settings))

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.websocket("/ws/chat")
    async def ws_chat(websocket: WebSocket) -> None:
        await proxy_chat(websocket, settings)

    return app
