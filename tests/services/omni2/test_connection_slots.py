"""The per-user connection limit shared by OMNI2 replicas (OMNI2_CONNECTION_SLOTS=database), on
SQLite and PostgreSQL: two apps on one database, as two replicas behind Traefik, hold one
limit; a closed connection frees its slot in every replica; a replica that died stops
counting once its slots go stale."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from services.common.protocol import CloseCode
from services.db import Database
from services.omni2.checks import SharedConnectionSlots
from services.omni2.connect import database_unavailable
from tests.services.omni2.conftest import gateway_headers
from tests.services.omni2.test_limits import _refused


def test_two_replicas_hold_one_limit(make_client: Callable[..., TestClient]) -> None:
    options = {"connection_slots": "database", "max_connections_per_user": 2}
    a = make_client(replica_id="replica-a", **options)
    b = make_client(replica_id="replica-b", **options)
    alice = gateway_headers("alice")
    with a.websocket_connect("/ws/chat", headers=alice) as on_a:
        assert on_a.receive_json()["type"] == "welcome"
        with b.websocket_connect("/ws/chat", headers=alice) as on_b:
            assert on_b.receive_json()["type"] == "welcome"
            for replica in (a, b):  # each replica sees the other's connection
                closed = _refused(replica, alice)
                assert closed.code == CloseCode.TOO_MANY_CONNECTIONS
                assert closed.reason == "too many connections: 2 already open for this user"
        # b gives its slot back once its handler ends, just after the client's close.
        deadline = time.monotonic() + 5
        while True:
            try:
                with a.websocket_connect("/ws/chat", headers=alice) as again:
                    assert again.receive_json()["type"] == "welcome"
                break
            except WebSocketDisconnect as closed:
                assert closed.code == CloseCode.TOO_MANY_CONNECTIONS
                assert time.monotonic() < deadline, "closing on b never freed a slot for a"
                time.sleep(0.05)


def test_a_dead_replicas_slots_stop_counting(database_url: str) -> None:
    # The replicas' clock is the test's: a loaded machine between two steps must not make
    # the dead replica's rows stale before the live one has counted them.
    now = [time.time()]

    async def scenario() -> tuple[int, int, bool]:
        db = Database(database_url)
        await db.create_tables()
        try:
            dead = SharedConnectionSlots(db, "dead", stale_after_s=30, clock=lambda: now[0])
            alive = SharedConnectionSlots(db, "alive", stale_after_s=30, clock=lambda: now[0])
            for _ in range(2):
                slot, _ = await dead.acquire("carol", 2)
                assert slot is not None
            now[0] += 29
            refused, used_while_dead = await alive.acquire("carol", 2)
            assert refused is None
            mine, _ = await alive.acquire("dave", 1)
            assert mine is not None
            now[0] += 2  # the dead replica's rows are 31 s old, the live one's 2 s
            await alive.refresh()  # the live replica keeps its own slots
            now[0] += 29
            taken, used_after = await alive.acquire("carol", 2)
            still_full, _ = await alive.acquire("dave", 1)
            return used_while_dead, used_after, taken is not None and still_full is None
        finally:
            await db.dispose()

    used_while_dead, used_after, ok = asyncio.run(scenario())
    assert (used_while_dead, used_after) == (2, 0), "the dead replica's rows went stale"
    assert ok, "a refreshed slot still counts, a stale one does not"


def test_an_unreachable_slot_table_refuses_with_a_reason(
    make_client: Callable[..., TestClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    client = make_client(connection_slots="database", replica_id="replica-a")

    async def down(self: SharedConnectionSlots, user_id: str, limit: int) -> None:
        raise OSError("connection refused")

    monkeypatch.setattr(SharedConnectionSlots, "acquire", down)
    closed = _refused(client, gateway_headers("alice"))
    assert (closed.code, closed.reason) == (
        database_unavailable().code,
        database_unavailable().reason,
    )
