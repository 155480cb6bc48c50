"""OMNI2's HTTP/WebSocket surface: `/ws/chat` (behind Traefik) and `/healthz`."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from opentelemetry import trace
from opentelemetry.trace import SpanKind, format_trace_id
from sqlalchemy.exc import SQLAlchemyError

from otel.fastapi import telemetry_config
from otel.names import Attr, Flow, SpanName
from otel.propagation import extract_headers, remote_span_context
from services.common.protocol import CloseCode, welcome_frame
from services.common.refusal import Refusal, refuse
from services.omni2.chat import ChatSession
from services.omni2.checks import CheckRun, check_connection
from services.omni2.db import Database
from services.omni2.db.engine import redacted_url
from services.omni2.db.repository import FlowRecord, UserContext
from services.omni2.db.seed import seed_demo
from services.omni2.gateway import gateway_identity
from services.omni2.model import ChatModel
from services.omni2.providers import create_model
from services.omni2.settings import Omni2Settings
from services.omni2.store import Store
from services.omni2.tools import McpToolbox

log = logging.getLogger(__name__)
tracer = trace.get_tracer(__name__)


def create_app(
    settings: Omni2Settings,
    model: ChatModel | None = None,
    toolbox: McpToolbox | None = None,
) -> FastAPI:
    db = Database(settings.database_url)
    store = Store(db)
    tools = toolbox or McpToolbox.from_settings(settings)
    secret = settings.jwt_secret.get_secret_value()
    chat_model = model or create_model(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await db.create_tables()
        if settings.seed_demo_users:
            added = await seed_demo(db)
            if added:
                log.info("seeded %d demo roles and users", added)
        log.info(
            "database %s, model %s/%s", redacted_url(db.url), chat_model.provider, chat_model.name
        )
        tools.start()  # the MCP handshake now, in its own trace, not in a message's
        yield
        await tools.aclose()
        await db.dispose()

    app = FastAPI(title="omni2", telemetry=telemetry_config(), lifespan=lifespan)
    app.state.db = db
    app.state.toolbox = tools

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "model": chat_model.name, "database": db.dialect}

    async def load_user(checks: CheckRun, user_id: str) -> UserContext:
        """The user's context, or Refusal (unknown, inactive, blocked, no database)."""
        try:
            async with db.session() as session:
                return await check_connection(session, checks, user_id)
        except (SQLAlchemyError, OSError) as err:
            log.error("cannot check user %s, database unavailable: %s", user_id, err)
            raise database_unavailable() from err

    @app.websocket("/ws/chat")
    async def ws_chat(websocket: WebSocket) -> None:
        # Traefik's ReverseProxy span is the parent; message turns link back to it.
        parent = extract_headers(websocket.headers)
        with tracer.start_as_current_span(
            SpanName.CONNECT, context=parent, kind=SpanKind.SERVER
        ) as span:
            session_trace = format_trace_id(span.get_span_context().trace_id)
            # Accept first: a close before accept reaches the client as a bare 403.
            await websocket.accept()
            try:
                identity = gateway_identity(websocket.headers, secret)
            except Refusal as refusal:
                log.warning("refused connection: %s", refusal.reason)
                await refuse(websocket, span, refusal)
                return
            span.set_attribute(Attr.USER_ID, identity.user_id)
            checks = CheckRun({Attr.USER_ID: identity.user_id})
            try:
                user = await load_user(checks, identity.user_id)
            except Refusal as refusal:
                log.warning("refused user %s: %s", identity.user_id, refusal.reason)
                checks.flow.append(
                    FlowRecord(Flow.CONNECT, "refused", "denied", detail={"reason": refusal.reason})
                )
                await store.record_flow(
                    checks.flow,
                    session_trace,
                    identity.user_id,
                    None,
                    {Attr.USER_ID: identity.user_id},
                )
                await refuse(websocket, span, refusal)
                return
            conversation_id = str(uuid.uuid4())
            attributes = {Attr.USER_ID: user.user_id, Attr.CONVERSATION_ID: conversation_id}
            span.set_attributes(attributes | {Attr.USER_ROLE: user.role})
            checks.flow.append(
                FlowRecord(Flow.CONNECT, "accepted", "ok", detail={"role": user.role})
            )
            try:
                await store.open_conversation(
                    conversation_id, user.user_id, session_trace, checks.flow, attributes
                )
            except (SQLAlchemyError, OSError) as err:
                log.error("cannot store conversation %s: %s", conversation_id, err)
                await refuse(websocket, span, database_unavailable())
                return
            try:
                await websocket.send_text(json.dumps(welcome_frame(conversation_id, user.user_id)))
            except (OSError, RuntimeError, WebSocketDisconnect):
                span.set_attribute(Attr.ERROR_TYPE, "client_gone")
                return
            log.info(
                "connection user=%s role=%s conversation=%s trace=%s",
                user.user_id,
                user.role,
                conversation_id,
                session_trace,
            )
        session = ChatSession(
            websocket=websocket,
            model=chat_model,
            store=store,
            toolbox=tools,
            settings=settings,
            user=user,
            conversation_id=conversation_id,
            gateway=remote_span_context(parent),
        )
        await session.run()

    return app


def database_unavailable() -> Refusal:
    return Refusal(
        CloseCode.INTERNAL_ERROR,
        "service unavailable: OMNI2 cannot reach its database",
        "database_unavailable",
    )
