"""OMNI2's HTTP/WebSocket surface: `/ws/chat` (behind Traefik) and `/healthz`."""

from __future__ import annotations

import json
import logging
import uuid

from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from opentelemetry import trace
from opentelemetry.trace import SpanKind, format_trace_id

from otel.fastapi import telemetry_config
from otel.names import Attr, SpanName
from otel.propagation import extract_headers, remote_span_context
from services.common.protocol import welcome_frame
from services.common.refusal import Refusal, refuse
from services.omni2.chat import ChatSession
from services.omni2.gateway import gateway_identity
from services.omni2.model import ChatModel, create_model
from services.omni2.settings import Omni2Settings

log = logging.getLogger(__name__)
tracer = trace.get_tracer(__name__)


def create_app(settings: Omni2Settings, model: ChatModel | None = None) -> FastAPI:
    app = FastAPI(title="omni2", telemetry=telemetry_config())
    secret = settings.jwt_secret.get_secret_value()
    chat_model = model or create_model(
        settings.model_provider, settings.model_name, settings.model_token_delay_ms
    )

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "model": chat_model.name}

    @app.websocket("/ws/chat")
    async def ws_chat(websocket: WebSocket) -> None:
        # Traefik's ReverseProxy span is the parent; message turns link back to it.
        parent = extract_headers(websocket.headers)
        with tracer.start_as_current_span(
            SpanName.CONNECT, context=parent, kind=SpanKind.SERVER
        ) as span:
            # Accept first: a close before accept reaches the client as a bare 403.
            await websocket.accept()
            try:
                identity = gateway_identity(websocket.headers, secret)
            except Refusal as refusal:
                log.warning("refused connection: %s", refusal.reason)
                await refuse(websocket, span, refusal)
                return
            conversation_id = str(uuid.uuid4())
            span.set_attributes(
                {Attr.USER_ID: identity.user_id, Attr.CONVERSATION_ID: conversation_id}
            )
            try:
                await websocket.send_text(
                    json.dumps(welcome_frame(conversation_id, identity.user_id))
                )
            except (OSError, RuntimeError, WebSocketDisconnect):
                span.set_attribute(Attr.ERROR_TYPE, "client_gone")
                return
            log.info(
                "connection user=%s conversation=%s trace=%s",
                identity.user_id,
                conversation_id,
                format_trace_id(span.get_span_context().trace_id),
            )
        session = ChatSession(
            websocket=websocket,
            model=chat_model,
            user_id=identity.user_id,
            conversation_id=conversation_id,
            gateway=remote_span_context(parent),
            history_turns=settings.history_turns,
        )
        await session.run()

    return app
