"""Failed-login limits shared by dashboard replicas (DASHBOARD_LOGIN_LIMITS=database), on
SQLite and PostgreSQL: two dashboard apps on one OMNI2 database hold one allowance, parallel
attempts on both count like attempts in a row, the table stays bounded whatever names a
client sends, and a database problem is a 503 with a reason. And the client address behind
Traefik's front entry point (DASHBOARD_BEHIND_GATEWAY): the last X-Forwarded-For entry."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import text
from starlette.requests import Request

from services.common.passwords import verify_password
from services.dashboard.app import create_app
from services.dashboard.login import UserStore, client_address, login_router
from services.dashboard.login_limits import (
    ADDRESS,
    SLOW,
    USER,
    Attempt,
    DatabaseLoginLimits,
    LimitRefusal,
    SlowDown,
)
from services.db import Database
from tests.pg import emptied
from tests.services.dashboard.test_login import _omni2_database, login, settings


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """OMNI2's database as OMNI2 leaves it at start (tables, demo users), on both servers."""
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'omni2.db'}"
    else:
        url = asyncio.run(emptied(request.getfixturevalue("postgres_database")))
    asyncio.run(_omni2_database(url))
    return url


def replica(url: str, **overrides: Any) -> FastAPI:
    return create_app(settings(url, login_limits="database", **overrides))


def test_two_replicas_share_the_per_user_limit(
    database_url: str, client_for: Callable[[FastAPI], TestClient]
) -> None:
    a = client_for(replica(database_url, login_max_failures_per_user=3))
    b = client_for(replica(database_url, login_max_failures_per_user=3))
    for client in (a, b, a):  # a client alternating between the replicas
        assert login(client, "alice", "wrong-one").status_code == 401
    refused = login(b, "alice", "alice-demo")  # the 4th attempt, on the other replica
    assert refused.status_code == 429
    retry_after = int(refused.headers["retry-after"])
    assert 290 <= retry_after <= 300
    assert refused.json() == {
        "detail": (
            f"too many failed logins for this user from this address; try again in {retry_after} s"
        ),
        "retry_after_s": retry_after,
    }
    assert login(a, "alice", "alice-demo").status_code == 429
    assert login(a, "bob", "bob-demo").status_code == 200  # others may log in on either
    assert login(b, "bob", "bob-demo").status_code == 200


def test_two_replicas_share_the_per_address_limit_and_a_success_resets_only_the_user(
    database_url: str, client_for: Callable[[FastAPI], TestClient]
) -> None:
    limits = {"login_max_failures_per_user": 3, "login_max_failures_per_address": 4}
    a = client_for(replica(database_url, **limits))
    b = client_for(replica(database_url, **limits))
    assert login(a, "alice", "wrong-one").status_code == 401
    assert login(b, "alice", "wrong-one").status_code == 401
    assert login(a, "alice", "alice-demo").status_code == 200  # alice's count is gone
    for client, name in ((b, "alice"), (a, "guess-1")):
        assert login(client, name, "wrong-one").status_code == 401
    # 4 failures of this address on the two replicas (the success took back only its own).
    refused = login(b, "bob", "bob-demo")
    assert refused.status_code == 429
    assert "from this address" in refused.json()["detail"]


def test_in_memory_each_replica_counts_on_its_own(
    database_url: str, client_for: Callable[[FastAPI], TestClient]
) -> None:
    """What the shared limits are for: in memory, alternating replicas doubles the tries."""
    a = client_for(create_app(settings(database_url, login_max_failures_per_user=3)))
    b = client_for(create_app(settings(database_url, login_max_failures_per_user=3)))
    for _ in range(3):
        for client in (a, b):
            assert login(client, "alice", "wrong-one").status_code == 401
    assert login(a, "alice", "wrong-one").status_code == 429


async def test_parallel_guesses_on_two_replicas_get_no_more_tries_than_sequential_ones(
    database_url: str,
) -> None:
    verified: list[str] = []

    def slow(stored: str, password: str) -> bool:
        verified.append(password)
        time.sleep(0.2)  # all requests arrive while the first ones are still verifying
        return False

    stores = [UserStore(database_url, timeout_s=30) for _ in range(2)]
    clients = []
    for n, store in enumerate(stores):
        app = FastAPI()
        app.include_router(
            login_router(settings(database_url, login_limits="database"), store=store, verify=slow)
        )
        transport = httpx.ASGITransport(app=app, client=("10.0.0.9", 40000 + n))
        clients.append(httpx.AsyncClient(transport=transport, base_url=f"http://replica-{n}"))
    try:
        answers = await asyncio.gather(
            *(
                clients[i % 2].post(
                    "/api/login", json={"username": "alice", "password": f"guess-{i}"}
                )
                for i in range(20)
            )
        )
    finally:
        for client in clients:
            await client.aclose()
        for store in stores:
            await store.close()
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [401] * 5 + [429] * 15, [a.text for a in answers if a.status_code >= 500]
    assert len(verified) == 5


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def _limits(
    store: UserStore,
    clock: Clock,
    per_user: int = 3,
    per_address: int = 1000,
    max_keys: int = 50,
    slow_down: SlowDown | None = None,
) -> DatabaseLoginLimits:
    return DatabaseLoginLimits(
        store.transaction,
        per_user=per_user,
        per_address=per_address,
        window_s=60,
        max_keys=max_keys,
        slow_down=slow_down,
        clock=clock,
    )


async def test_the_window_slides_and_a_cancelled_attempt_is_no_failure(database_url: str) -> None:
    clock = Clock()
    store = UserStore(database_url, timeout_s=30)
    try:
        limits = _limits(store, clock)
        first = await limits.begin("carol", "10.0.0.1")
        assert isinstance(first, Attempt)
        await limits.cancel(first)  # e.g. the user store was down: not a failure
        for _ in range(3):
            assert isinstance(await limits.begin("carol", "10.0.0.1"), Attempt)
            clock.now += 10
        refusal = await limits.begin("carol", "10.0.0.1")  # failures at +0, +10, +20; now +30
        assert isinstance(refusal, LimitRefusal) and refusal.retry_after_s == 30
        clock.now += 29.5
        refusal = await limits.begin("carol", "10.0.0.1")
        assert isinstance(refusal, LimitRefusal) and refusal.retry_after_s == 1
        clock.now += 0.5  # the first failure leaves the window
        assert isinstance(await limits.begin("carol", "10.0.0.1"), Attempt)
    finally:
        await store.close()


async def test_the_table_is_bounded_whatever_number_of_names_a_client_sends(
    database_url: str,
) -> None:
    clock = Clock()
    store = UserStore(database_url, timeout_s=30)
    try:
        limits = _limits(store, clock, max_keys=50)
        for i in range(300):
            assert isinstance(
                await limits.begin(f"name-{i}", f"10.1.{i // 250}.{i % 250}"), Attempt
            )
            clock.now += 0.001
        assert await limits.keys(USER) == 50
        assert await limits.keys(ADDRESS) == 50
        assert await limits.keys(SLOW) == 50
        # The newest keys are the ones kept (the least recently failed went first).
        for _ in range(2):
            assert isinstance(await limits.begin("name-299", "10.1.1.49"), Attempt)
        assert isinstance(await limits.begin("name-299", "10.1.1.49"), LimitRefusal)
        assert isinstance(await limits.begin("name-0", "10.1.0.0"), Attempt)  # forgotten
        assert await limits.keys(USER) == 50
        # Keys whose failures left the window go before any active one.
        clock.now += 120
        assert isinstance(await limits.begin("late", "10.9.9.8"), Attempt)
        assert await limits.keys(USER) == 1 and await limits.keys(ADDRESS) == 1
    finally:
        await store.close()


async def test_refused_attempts_leave_no_row(database_url: str) -> None:
    clock = Clock()
    store = UserStore(database_url, timeout_s=30)
    try:
        limits = _limits(store, clock, per_user=1, slow_down=SlowDown(1, 100.0, 100.0, 30.0))
        assert isinstance(await limits.begin("dora", "10.0.0.1"), Attempt)
        for i in range(5):  # the name's next slot is too far: the new addresses are not stored
            refusal = await limits.begin("dora", f"10.0.5.{i}")
            assert isinstance(refusal, LimitRefusal) and "tried too often" in refusal.reason
        assert await limits.keys(ADDRESS) == 1
    finally:
        await store.close()


async def _drop_login_failures(url: str) -> None:
    db = Database(url)
    try:
        async with db.engine.begin() as conn:
            await conn.execute(text("DROP TABLE login_failures"))
    finally:
        await db.dispose()


def test_a_database_without_the_table_is_503_with_a_reason_and_never_a_crash(
    database_url: str, client_for: Callable[[FastAPI], TestClient]
) -> None:
    asyncio.run(_drop_login_failures(database_url))  # an OMNI2 from before the table
    client = client_for(replica(database_url))
    for _ in range(3):
        response = login(client, "alice", "alice-demo")
        assert response.status_code == 503
        assert response.json()["detail"] == (
            "login unavailable: the login_failures table is missing "
            "(OMNI2 of this version creates it at start)"
        )
    assert client.get("/healthz").status_code == 200
    asyncio.run(_omni2_database(database_url))  # OMNI2 starts: the table is made
    assert login(client, "alice", "alice-demo").status_code == 200


def test_a_database_lost_after_the_password_matched_still_logs_in(
    database_url: str, client_for: Callable[[FastAPI], TestClient]
) -> None:
    """The count cannot be reset: logged; the right password is not refused for it."""

    def drops_the_table(stored: str, password: str) -> bool:
        asyncio.run(_drop_login_failures(database_url))  # (in the verifier's thread)
        return verify_password(stored, password)

    app = FastAPI()
    app.include_router(
        login_router(settings(database_url, login_limits="database"), verify=drops_the_table)
    )
    client = client_for(app)
    assert login(client, "alice", "alice-demo").status_code == 200


def test_a_missing_database_is_503_and_is_not_created(
    tmp_path: Path, client_for: Callable[[FastAPI], TestClient]
) -> None:
    path = tmp_path / "none" / "omni2.db"
    client = client_for(replica(f"sqlite+aiosqlite:///{path}"))
    response = login(client, "alice", "alice-demo")
    assert response.status_code == 503
    assert response.json()["detail"] == (
        "login unavailable: the user database does not exist yet (OMNI2 creates it)"
    )
    assert not path.exists() and not path.parent.exists()


def test_an_unreachable_postgresql_is_503_without_the_url(
    client_for: Callable[[FastAPI], TestClient],
) -> None:
    url = "postgresql+asyncpg://omni:s3cret-pw@127.0.0.1:9/omni2"  # port 9: nothing listens
    client = client_for(replica(url, database_timeout_s=3))
    response = login(client, "alice", "alice-demo")
    assert response.status_code == 503
    detail = response.json()["detail"]
    assert detail.startswith("login unavailable: ")
    assert "s3cret-pw" not in detail and "127.0.0.1" not in detail


# -- the client address ---------------------------------------------------------------------


def _request(peer: str, *forwarded: str) -> Request:
    headers = [(b"x-forwarded-for", value.encode()) for value in forwarded]
    return Request(
        {"type": "http", "method": "POST", "path": "/", "headers": headers, "client": (peer, 1)}
    )


GATEWAY = ["10.0.0.2"]  # the peer of _request is the gateway


@pytest.mark.parametrize(
    ("forwarded", "trusted", "address"),
    [
        ((), [], "10.0.0.2"),
        (("203.0.113.7",), [], "10.0.0.2"),  # a client's own header: ignored
        ((), GATEWAY, "10.0.0.2"),  # no header from the gateway: the peer, never empty
        (("203.0.113.7",), GATEWAY, "203.0.113.7"),  # the entry Traefik appended
        (("6.6.6.6, 203.0.113.7",), GATEWAY, "203.0.113.7"),  # the client's entry comes first
        (("6.6.6.6", "7.7.7.7,203.0.113.7"), GATEWAY, "203.0.113.7"),  # two header lines
        (("1.1.1.1,  2001:db8::1 ",), GATEWAY, "2001:db8::1"),
        # A client that reached the dashboard itself, not through the gateway: its header is
        # its own word, whatever it says.
        (("203.0.113.7",), ["10.0.0.1"], "10.0.0.2"),
        (("203.0.113.7",), ["10.0.0.0/24"], "203.0.113.7"),  # a network of gateways
        (("203.0.113.7",), ["10.0.1.0/24", "::/0"], "10.0.0.2"),
    ],
)
def test_the_client_address(forwarded: tuple[str, ...], trusted: list[str], address: str) -> None:
    assert client_address(_request("10.0.0.2", *forwarded), trusted) == address


def test_a_trusted_proxy_that_is_no_address_is_refused_at_start() -> None:
    with pytest.raises(ValueError, match="'gateway' is not an IP address or network"):
        settings("sqlite+aiosqlite:///unused.db", trusted_proxies=["gateway"])


async def _attempts(
    url: str, trusted: list[str], forwarded: list[str | None], **limits: Any
) -> list[int]:
    """Failed logins through one dashboard behind a gateway, reached from 10.0.0.2 (the
    gateway when `trusted` holds it, else a client), each with the X-Forwarded-For given
    (None: none); their statuses."""
    store = UserStore(url, timeout_s=30)
    app = FastAPI()
    app.include_router(
        login_router(
            settings(url, behind_gateway=True, trusted_proxies=trusted, **limits),
            store=store,
            verify=lambda _h, _p: False,
        )
    )
    transport = httpx.ASGITransport(app=app, client=("10.0.0.2", 40000))
    statuses = []
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://dashboard") as client:
            for n, header in enumerate(forwarded):
                answer = await client.post(
                    "/api/login",
                    json={"username": f"guess-{n}", "password": "wrong-one"},
                    headers={"x-forwarded-for": header} if header else {},
                )
                statuses.append(answer.status_code)
    finally:
        await store.close()
    return statuses


@pytest.mark.parametrize("login_limits", ["memory", "database"])
async def test_behind_the_gateway_a_client_cannot_escape_its_limit_with_its_own_header(
    database_url: str, login_limits: str
) -> None:
    # The client rotates the entries it writes; Traefik appends its real address last.
    spoofed = [f"198.51.100.{n}, 203.0.113.7" for n in range(3)]
    statuses = await _attempts(
        database_url,
        GATEWAY,
        [*spoofed, "203.0.113.8", "9.9.9.9,203.0.113.7"],
        login_max_failures_per_address=3,
        login_limits=login_limits,
    )
    # 3 failures of 203.0.113.7 whatever it wrote, another client unaffected, then 429.
    assert statuses == [401, 401, 401, 401, 429]


@pytest.mark.parametrize("login_limits", ["memory", "database"])
@pytest.mark.parametrize("trusted", [[], ["10.0.0.1"]])
async def test_reached_directly_the_header_is_ignored(
    database_url: str, login_limits: str, trusted: list[str]
) -> None:
    # Behind a gateway (DASHBOARD_BEHIND_GATEWAY), but reached from elsewhere: a replica's own
    # port is open to the machine, and a client there writes whatever header it likes.
    statuses = await _attempts(
        database_url,
        trusted,
        ["203.0.113.1", "203.0.113.2", None, "203.0.113.3"],
        login_max_failures_per_address=3,
        login_limits=login_limits,
    )
    assert statuses == [401, 401, 401, 429]  # one peer address, whatever the header says
