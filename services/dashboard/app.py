"""Dashboard backend: `/api/login` issues the JWT, `/ws/chat` proxies to Traefik."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, HTTPException, WebSocket
from fastapi.middleware.cors import CORSMiddleware
from opentelemetry import trace
from pydantic import BaseModel

from otel.fastapi import telemetry_config
from otel.names import Attr
from services.common.tokens import issue_token
from services.dashboard.audit import RefusalLog
from services.dashboard.proxy import proxy_chat
from services.dashboard.query import TokenFromQuery
from services.dashboard.settings import DashboardSettings
from services.dashboard.users import check_password
from services.omni2.db import Database


class LoginRequest(BaseModel):
    username: str
    password: str


class LoginResponse(BaseModel):
    token: str
    token_type: str = "bearer"
    expires_in: int
    user_id: str


def create_app(settings: DashboardSettings) -> FastAPI:
    db = Database(settings.database_url.get_secret_value())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await db.dispose()

    app = FastAPI(title="dashboard-backend", telemetry=telemetry_config(), lifespan=lifespan)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.allowed_origins,
        allow_methods=["GET", "POST"],
        allow_headers=["Content-Type", "traceparent"],
    )
    # Outermost: the token leaves the query before any other layer sees the URL.
    app.add_middleware(TokenFromQuery)
    secret = settings.jwt_secret.get_secret_value()
    refusals = RefusalLog(db)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/api/login")
    async def login(body: LoginRequest) -> LoginResponse:
        if not check_password(body.username, body.password):
            raise HTTPException(status_code=401, detail="invalid username or password")
        trace.get_current_span().set_attribute(Attr.USER_ID, body.username)
        return LoginResponse(
            token=issue_token(body.username, secret, settings.token_ttl_s),
            expires_in=settings.token_ttl_s,
            user_id=body.username,
        )

    @app.websocket("/ws/chat")
    async def ws_chat(websocket: WebSocket) -> None:
        await proxy_chat(websocket, settings, refusals)

    return app
