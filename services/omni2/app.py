"""OMNI2's HTTP/WebSocket surface: `/ws/chat` (behind Traefik) and `/healthz`."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, WebSocket
from sqlalchemy.exc import SQLAlchemyError

from otel.instrumentation import instrument, telemetry_config
from otel.websocket import instrument_chat_server
from services.db import Database
from services.db.engine import redacted_url
from services.db.repository import usage as usage_repo
from services.db.seed import seed_demo, write_demo_users
from services.omni2.chat import ChatServices
from services.omni2.checks import SharedConnectionSlots
from services.omni2.connect import ChatConnect, chat_tracing
from services.omni2.model import ChatModel
from services.omni2.providers import create_model
from services.omni2.settings import Omni2Settings
from services.omni2.store import Store
from services.omni2.tools import McpToolbox
from services.omni2.webhook import UsageWebhook

log = logging.getLogger(__name__)


async def release_reservations(db: Database) -> None:
    """Reservations left by answers no process will save: one OMNI2 releases every one, a
    replica its own (its previous process died mid-answer) and those of replicas gone."""
    async with db.session() as session:
        if db.replica is None:
            if released := await usage_repo.release_reservations(session):
                log.warning("released usage reservations of %d user days (OMNI2 stopped)", released)
            return
        await usage_repo.replica_seen(session, db.replica, time.time())
        if released := await usage_repo.release_reservations(session, db.replica):
            log.warning(
                "released %d usage reservations this replica (%s) left when it stopped",
                released,
                db.replica,
            )


async def _release_stale(db: Database, replica: str, stale_after_s: float) -> None:
    """Say that this replica runs, and release the reservations of replicas that stopped
    saying it (they died mid-answer and did not come back)."""
    async with db.session() as session:
        await usage_repo.replica_seen(session, replica, time.time())
        if released := await usage_repo.release_stale_reservations(
            session, time.time(), stale_after_s
        ):
            log.warning("released %d usage reservations of replicas gone", released)


async def _keep_replica_seen(db: Database, replica: str, stale_after_s: float) -> None:
    while True:
        try:
            await _release_stale(db, replica, stale_after_s)
        except (SQLAlchemyError, OSError) as err:
            log.warning("could not record that replica %s runs: %s", replica, err)
        await asyncio.sleep(stale_after_s / 3)


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
    # Replicas share the database: each one's reservations (and connection slots) are its own.
    replica = settings.replica_id or uuid.uuid4().hex[:12]
    db = Database(
        settings.database_url,
        sql_spans=settings.sql_spans,
        replica=replica if settings.replicated else None,
    )
    store = Store(db)
    tools = toolbox or McpToolbox.from_settings(settings)
    chat_model = model or create_model(settings)
    webhook = UsageWebhook(settings.usage_webhook_url, settings.usage_webhook_timeout_s)
    shared = (
        SharedConnectionSlots(db, replica, settings.connection_slot_stale_s)
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
        background = [asyncio.create_task(services.churn.refusals.run())]
        if shared is not None:
            background.append(asyncio.create_task(_refresh_slots(shared)))
        if db.replica is not None:
            background.append(
                asyncio.create_task(
                    _keep_replica_seen(db, db.replica, settings.reservation_stale_s)
                )
            )
        yield
        for task in background:
            task.cancel()
        # Wait for them: one cut short in a query must let go of its connection before the
        # engine is disposed (an aiosqlite connection closed under it never answers).
        await asyncio.gather(*background, return_exceptions=True)
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

    # The chat's session and turn spans (otel.websocket): the backend role.
    instrument_chat_server(app, role="backend", **chat_tracing(services, settings.jwt_secret))

    instrument(app, websocket_paths=("/ws/chat",))
    return app
