"""Usage reservations owned per OMNI2 replica, on SQLite and PostgreSQL: a replica that starts
releases only the reservations it left itself, never those of another replica's answers in
flight; a replica that died has its reservations released by the others once it is stale; a
single OMNI2 (no replica id) still releases every reservation at start."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from services.db import Database
from services.db.models import ReplicaHeartbeat, UsageReservation
from services.db.repository import usage as usage_repo
from services.db.repository import users as users_repo
from services.db.seed import seed_demo
from services.omni2.checks import CheckRun, Denied, UsagePolicy, check_message
from services.omni2.model import ChatMessage, ModelEvent, OfflineModel, TextChunk, ToolSpec
from tests.db import Admin
from tests.services.omni2.conftest import converse, gateway_headers

POLICY = UsagePolicy(warning_ratio=0.8, reserve_tokens=2000, reserve_cost=0.006)
REPLICAS = {"connection_slots": "database"}
STALE_S = 30.0


class HeldModel(OfflineModel):
    """Streams one token, then holds the answer until the test lets it go."""

    def __init__(self) -> None:
        super().__init__()
        self.go = threading.Event()

    async def stream(
        self, messages: Sequence[ChatMessage], tools: Sequence[ToolSpec] = ()
    ) -> AsyncIterator[ModelEvent]:
        yield TextChunk("held ")
        if not await asyncio.to_thread(self.go.wait, 60):
            raise TimeoutError("the test never let the answer go")
        async for event in super().stream(messages, tools):
            yield event


def _day(admin: Admin, user: str) -> usage_repo.DayUsage:
    return admin(lambda s: usage_repo.day_usage(s, user, usage_repo.today()))


def _reservations(admin: Admin) -> list[tuple[str, str, int]]:
    async def rows(session: AsyncSession) -> list[tuple[str, str, int]]:
        r = UsageReservation
        found = await session.execute(
            select(r.user_id, r.replica, r.tokens).order_by(r.user_id, r.replica)
        )
        return [tuple(row) for row in found]  # type: ignore[misc]

    return admin(rows)


def test_a_replica_that_starts_keeps_the_reservations_of_another_replicas_answer(
    make_client: Callable[..., TestClient], admin: Admin
) -> None:
    model = HeldModel()
    a = make_client(model=model, replica_id="replica-a", **REPLICAS)
    try:
        with a.websocket_connect("/ws/chat", headers=gateway_headers("tim")) as ws:
            assert ws.receive_json()["type"] == "welcome"
            ws.send_json({"type": "message", "text": "hello"})
            assert ws.receive_json() == {"type": "token", "text": "held "}  # checks passed
            assert _day(admin, "tim").reserved_tokens == 2000

            make_client(replica_id="replica-b", **REPLICAS)  # B starts while A answers

            assert _day(admin, "tim").reserved_tokens == 2000, "B released A's reservation"
            assert _reservations(admin) == [("tim", "replica-a", 2000)]
            model.go.set()
            frames = [ws.receive_json()]
            while frames[-1]["type"] not in ("done", "error"):
                frames.append(ws.receive_json())
    finally:
        model.go.set()
    assert frames[-1]["type"] == "done", frames[-1]
    used = frames[-1]["result"]["tokens_used"]
    day = _day(admin, "tim")
    assert (day.tokens, day.reserved_tokens, day.reserved_cost) == (used, 0, pytest.approx(0))
    assert _reservations(admin) == [], "the settled reservation's row is gone"


def test_a_replica_releases_what_it_left_itself_at_start(
    make_client: Callable[..., TestClient], admin: Admin, database_url: str
) -> None:
    make_client(replica_id="replica-a", **REPLICAS)
    make_client(replica_id="replica-b", **REPLICAS)  # running: it says so every 10 s
    # A died mid-answer (its reservation stays), B is answering now.
    asyncio.run(_check(database_url, "tim", "replica-a"))
    asyncio.run(_check(database_url, "alice", "replica-b"))
    assert _day(admin, "tim").reserved_tokens == _day(admin, "alice").reserved_tokens == 2000

    make_client(replica_id="replica-a", **REPLICAS)  # A again, same name

    assert _day(admin, "tim").reserved_tokens == 0, "A's own reservation was released"
    assert _day(admin, "alice").reserved_tokens == 2000, "B's reservation was released"
    assert _reservations(admin) == [("alice", "replica-b", 2000)]


def test_a_single_omni2_releases_every_reservation_at_start(
    make_client: Callable[..., TestClient], admin: Admin, database_url: str
) -> None:
    make_client()  # the tables exist
    asyncio.run(_check(database_url, "tim", "replica-a"))  # left by a replica
    admin(  # and one without an owner (a database from before owners)
        lambda s: usage_repo.reserve_usage(
            s, "alice", usage_repo.today(), tokens=2000, cost=0.5, token_limit=None, cost_limit=None
        )
    )
    make_client()  # one OMNI2 (no replica id): nothing else can be answering
    assert _day(admin, "tim").reserved_tokens == _day(admin, "alice").reserved_tokens == 0
    assert _reservations(admin) == []
    client = make_client()
    with client.websocket_connect("/ws/chat", headers=gateway_headers("tim")) as ws:
        ws.receive_json()
        assert converse(ws, "hello")[1][-1]["type"] == "done"


async def _check(url: str, user: str, replica: str | None) -> usage_repo.Reservation:
    """One message check of `user` in a process that is `replica`: its reservation."""
    db = Database(url, replica=replica)
    try:
        async with db.session() as session:
            allowance = await check_message(session, CheckRun({}), user, POLICY)
        return allowance.reservation
    finally:
        await db.dispose()


def test_a_dead_replicas_reservations_are_released_once_it_is_stale(database_url: str) -> None:
    async def scenario() -> dict[str, Any]:
        setup = Database(database_url)
        await setup.create_tables()
        await seed_demo(setup)
        await setup.dispose()
        dead, alive = (
            Database(database_url, replica="dead"),
            Database(database_url, replica="alive"),
        )
        seen: dict[str, Any] = {}
        # The replicas' clock is the test's: a loaded machine between two steps must not
        # make the dead replica stale early (then "fresh" releases it, and nothing is left).
        start = time.time()
        try:
            for db in (dead, alive):
                async with db.session() as session:
                    await usage_repo.replica_seen(session, db.replica or "", start)
            async with dead.session() as session:
                dead_one = (await check_message(session, CheckRun({}), "tim", POLICY)).reservation
            async with alive.session() as session:
                mine = (await check_message(session, CheckRun({}), "alice", POLICY)).reservation
            async with alive.session() as session:  # dead is fresh: nothing to release yet
                seen["fresh"] = await usage_repo.release_stale_reservations(
                    session, start + STALE_S / 2, STALE_S
                )
            later = start + STALE_S + 1  # the live replica kept itself seen; the dead one not
            async with alive.session() as session:
                await usage_repo.replica_seen(session, "alive", later)
                seen["released"] = await usage_repo.release_stale_reservations(
                    session, later, STALE_S
                )
            async with alive.session() as session:
                seen["tim"] = await usage_repo.day_usage(session, "tim", usage_repo.today())
                seen["alice"] = await usage_repo.day_usage(session, "alice", usage_repo.today())
            # The dead replica was only slow: its answer is saved after all. Its usage counts,
            # and the reservation already released is not taken back a second time.
            async with dead.session() as session:
                await usage_repo.settle_usage(session, dead_one, 150, 0.01)
            async with alive.session() as session:
                await usage_repo.settle_usage(session, mine, 90, 0.02)
            async with alive.session() as session:
                seen["tim settled"] = await usage_repo.day_usage(session, "tim", usage_repo.today())
                seen["alice settled"] = await usage_repo.day_usage(
                    session, "alice", usage_repo.today()
                )
                seen["rows"] = await session.scalar(
                    select(func.count()).select_from(UsageReservation)
                )
            return seen
        finally:
            await dead.dispose()
            await alive.dispose()

    seen = asyncio.run(scenario())
    assert seen["fresh"] == 0
    assert seen["released"] == 1
    assert seen["tim"].reserved_tokens == 0 and seen["tim"].reserved_cost == pytest.approx(0)
    assert seen["alice"].reserved_tokens == 2000, "a live replica's reservation was released"
    tim, alice = seen["tim settled"], seen["alice settled"]
    assert (tim.tokens, tim.reserved_tokens) == (150, 0)
    assert tim.cost == pytest.approx(0.01) and tim.reserved_cost == pytest.approx(0)
    assert (alice.tokens, alice.reserved_tokens) == (90, 0)
    assert seen["rows"] == 0


def test_parallel_checks_of_two_replicas_hold_the_daily_limit_and_own_their_rows(
    database_url: str,
) -> None:
    user = f"u-{uuid.uuid4().hex[:8]}"

    async def scenario() -> tuple[list[str], list[tuple[str, int]], usage_repo.DayUsage]:
        setup = Database(database_url)
        await setup.create_tables()
        await seed_demo(setup)
        async with setup.session() as session:
            await users_repo.add_user(session, user, "user")
            await session.flush()
            await users_repo.set_limits(session, user, daily_tokens=5000, rate_per_minute=None)
        await setup.dispose()
        a, b = Database(database_url, replica="a"), Database(database_url, replica="b")
        start = asyncio.Event()

        async def one(db: Database) -> str:
            await start.wait()
            try:
                async with db.session() as session:
                    await check_message(session, CheckRun({}), user, POLICY)
            except Denied as denied:
                return denied.error_type
            return "ok"

        tasks = [asyncio.create_task(one(db)) for db in (a, b) * 6]
        await asyncio.sleep(0)
        start.set()
        try:
            results = await asyncio.gather(*tasks)
            async with a.session() as session:
                r = UsageReservation
                owners = await session.execute(
                    select(r.replica, func.count()).where(r.user_id == user).group_by(r.replica)
                )
                day = await usage_repo.day_usage(session, user, usage_repo.today())
            return results, sorted((o, int(n)) for o, n in owners), day
        finally:
            await a.dispose()
            await b.dispose()

    results, owners, day = asyncio.run(scenario())
    # 5000 tokens: 3 reservations of 2000 fit (0, 2000, 4000 used+reserved before each).
    assert sorted(results) == ["ok"] * 3 + ["usage_reserved"] * 9
    assert sum(n for _, n in owners) == 3 and {o for o, _ in owners} <= {"a", "b"}
    assert day.reserved_tokens == 3 * 2000


def test_a_database_from_before_owners_gets_the_tables_and_its_unowned_reservations_go(
    make_client: Callable[..., TestClient], admin: Admin, database_url: str
) -> None:
    make_client()

    async def make_old() -> None:
        db = Database(database_url)
        try:
            async with db.engine.begin() as conn:
                for table in ("usage_reservations", "replica_heartbeats"):
                    await conn.execute(text(f"DROP TABLE {table}"))
        finally:
            await db.dispose()

    asyncio.run(make_old())
    admin(  # reserved by an OMNI2 from before owners, which died mid-answer
        lambda s: usage_repo.reserve_usage(
            s, "tim", usage_repo.today(), tokens=2000, cost=0.5, token_limit=None, cost_limit=None
        )
    )
    make_client(replica_id="replica-a", **REPLICAS)  # the first replica of this version
    assert _day(admin, "tim").reserved_tokens == 0, "an unowned reservation stayed for the day"
    assert admin(lambda s: s.scalar(select(func.count()).select_from(ReplicaHeartbeat))) == 1, (
        "the replica says it runs"
    )

    admin(  # from now on unowned reservations are a single OMNI2's, released at its start
        lambda s: usage_repo.reserve_usage(
            s, "tim", usage_repo.today(), tokens=2000, cost=0.5, token_limit=None, cost_limit=None
        )
    )
    make_client(replica_id="replica-b", **REPLICAS)
    assert _day(admin, "tim").reserved_tokens == 2000, "the upgrade step ran twice"
