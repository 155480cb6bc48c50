"""OMNI2 in process: the app on a fresh SQLite database, and the real MCP server in process."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from services.common.tokens import issue_token
from services.mcp_tools.server import create_server
from services.mcp_tools.settings import McpToolsSettings
from services.omni2.app import create_app
from services.omni2.settings import Omni2Settings
from services.omni2.tools import McpToolbox
from tests.db import Admin
from tests.pg import emptied

SECRET = "test-secret-0123456789abcdef0123456789"


def gateway_headers(user: str = "alice", token_user: str | None = None) -> dict[str, str]:
    return {
        "x-user-id": user,
        "authorization": f"Bearer {issue_token(token_user or user, SECRET)}",
    }


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Every OMNI2 test runs on SQLite and on a real PostgreSQL server."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'omni2.db'}"
    return asyncio.run(emptied(request.getfixturevalue("postgres_database")))


@pytest.fixture
def admin(database_url: str) -> Admin:
    return Admin(database_url)


@pytest.fixture
def make_client(database_url: str, tmp_path: Path) -> Iterator[Callable[..., TestClient]]:
    clients: list[TestClient] = []

    def make(mcp: Any = "in-process", model: Any = None, **overrides: Any) -> TestClient:
        settings = Omni2Settings(  # type: ignore[call-arg]
            OMNI_JWT_SECRET=SECRET,
            model_token_delay_ms=0,
            database_url=database_url,
            **overrides,
        )
        if mcp == "in-process":
            mcp = create_server(McpToolsSettings(sample_db=tmp_path / "sample.db"))
        client = TestClient(create_app(settings, model=model, toolbox=McpToolbox(mcp)))
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


def converse(ws: Any, text: str) -> tuple[str, list[dict[str, Any]]]:
    """Send one message; (streamed text, every frame up to done/error/blocked)."""
    ws.send_json({"type": "message", "text": text})
    frames, reply = [], ""
    while True:
        frame = ws.receive_json()
        frames.append(frame)
        if frame["type"] == "token":
            reply += frame["text"]
        elif frame["type"] in ("done", "error", "blocked"):
            return reply, frames
