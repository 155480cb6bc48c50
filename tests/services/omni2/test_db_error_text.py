"""A database error while OMNI2 stores a message leaves the message's text in no log line and
no span: OMNI2's engine hides bound parameters (SQLAlchemy's error text listed them: the
user's and the model's words went into omni2.log). The database really fails: a trigger
aborts the insert of the one message that carries the marker."""

from __future__ import annotations

import ast
import logging
import sqlite3
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.services.omni2.conftest import converse, gateway_headers

MARKER = f"canary-{uuid.uuid4().hex}"
ENGINE_FACTORIES = {"create_async_engine", "create_engine"}


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """SQLite only: the trigger that makes the write fail is SQLite's."""
    return f"sqlite+aiosqlite:///{tmp_path / 'omni2.db'}"


def _fail_inserts_containing(db_file: Path, word: str) -> None:
    with sqlite3.connect(db_file) as conn:
        conn.execute(
            "CREATE TRIGGER refuse_canary BEFORE INSERT ON messages "
            f"WHEN instr(NEW.content, '{word}') > 0 "
            "BEGIN SELECT RAISE(ABORT, 'refused by the test trigger'); END"
        )
    conn.close()


def test_a_failed_message_write_logs_no_message_text(
    make_client: Callable[..., TestClient],
    tmp_path: Path,
    spans: InMemorySpanExporter,
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = make_client()  # creates the tables
    _fail_inserts_containing(tmp_path / "omni2.db", MARKER)
    caplog.set_level(logging.INFO)  # the services' level (aiosqlite's DEBUG lines list values)
    with client.websocket_connect("/ws/chat", headers=gateway_headers()) as ws:
        assert ws.receive_json()["type"] == "welcome"
        reply, frames = converse(ws, f"please keep this private: {MARKER}")
        assert frames[-1]["type"] == "done", frames[-1]
        _, after = converse(ws, "and this one is stored")
        assert after[-1]["type"] == "done", after[-1]
    assert MARKER in reply, "the offline model repeats the message: both rows carried it"
    # The write did fail, and said so, with the database's own reason.
    assert "could not store the message" in caplog.text, caplog.text
    assert "refused by the test trigger" in caplog.text
    assert MARKER not in caplog.text, caplog.text
    dump = "".join(span.to_json() for span in spans.get_finished_spans())
    assert "chat.persist" in dump
    assert MARKER not in dump


def test_every_engine_the_project_creates_hides_parameters() -> None:
    """services/db's Database is the one engine (OMNI2, the dashboard's login and refusal log,
    the CLI and the tests use it); a new one must hide parameters as well."""
    root = Path(__file__).resolve().parents[3]
    calls = []
    for package in ("otel", "services", "omni_trace"):
        for path in sorted((root / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Call) and getattr(node.func, "id", "") in ENGINE_FACTORIES:
                    hidden = any(
                        k.arg == "hide_parameters"
                        and isinstance(k.value, ast.Constant)
                        and k.value.value is True
                        for k in node.keywords
                    )
                    calls.append((f"{path.relative_to(root)}:{node.lineno}", hidden))
    assert any(where.startswith("services/db/engine.py:") for where, _ in calls), calls
    assert all(hidden for _, hidden in calls), calls
