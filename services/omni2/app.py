"""OMNI2's HTTP/WebSocket surface: `/ws/chat` (behind Traefik) and `/healthz`."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, WebSocket
from sqlalchemy.exc import SQLAlchemyError

from otel.instrumentation import instrument, telemetry_config
from services.omni2.chat import ChatServices
from services.omni2.checks import SharedConnectionSlots
from services.omni2.connect import ChatConnect
from services.omni2.db import Database
from services.omni2.db import repository as repo
from services.omni2.db.engine import redacted_url
from services.omni2.db.seed import seed_demo, write_demo_users
from services.omni2.model import ChatModel
from services.omni2.providers import create_model
from services.omni2.settings import Omni2Settings
from services.omni2.store import Store
from services.omni2.tools import McpToolbox
from services.omni2.webhook import UsageWebhook

log = logging.getLogger(__name__)


async def release_reservations(db: Database) -> None:
    async with db.session() as session:
        if released := await repo.release_reservations(session):
            log.warning("released usage reservations of %d user days (OMNI2 stopped)", released)


async def _refresh_slots(slots: SharedConnectionSlots) -> None:
    """Keep this replica's connection slots counted while it runs."""
    while True:
        await asyncio.sleep(slots.stale_after_s / 3)
        try:
            await slots.refresh()
        except (SQLAlchemyError, OSError) as err:
            log.warning("could not refresh this replica's connection slots: %s", err)


def create_app(
    settings: Omni2Settings,
    model: ChatModel | None = None,
    toolbox: McpToolbox | None = None,
) -> FastAPI:
    db = Database(settings.database_url, sql_spans=settings.sql_spans)
    store = Store(db)
    tools = toolbox or McpToolbox.from_settings(settings)
    chat_model = model or create_model(settings)
    webhook = UsageWebhook(settings.usage_webhook_url, settings.usage_webhook_timeout_s)
    shared = (
        SharedConnectionSlots(db, settings.replica_id, settings.connection_slot_stale_s)
        if settings.connection_slots == "database"
        else None
    )
    services = ChatServices(settings, store, chat_model, tools, webhook=webhook)
    if shared is not None:
        services.connections = shared

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await db.create_tables()
        await release_reservations(db)
        if settings.seed_demo_users:
            added = await seed_demo(db)
            if added:
                log.info("seeded %d demo roles and users", added)
            if settings.demo_users_file is not None:
                write_demo_users(settings.demo_users_file)
        log.info(
            "database %s, model %s/%s", redacted_url(db.url), chat_model.provider, chat_model.name
        )
        tools.start()  # the MCP handshake now, in its own trace, not in a message's
        refresh = asyncio.create_task(_refresh_slots(shared)) if shared is not None else None
        yield
        if refresh is not None:
            refresh.cancel()
        await tools.aclose()
        await webhook.aclose()
        await db.dispose()

    app = FastAPI(title="omni2", telemetry=telemetry_config(), lifespan=lifespan)
    app.state.db = db
    app.state.toolbox = tools

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "model": chat_model.name, "database": db.dialect}

    @app.websocket("/ws/chat")
    async def ws_chat(websocket: WebSocket) -> None:
        await ChatConnect(websocket, services, settings.jwt_secret).serve()

    instrument(app, websocket_paths=("/ws/chat",))
    return app
