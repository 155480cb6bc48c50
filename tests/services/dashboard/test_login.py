"""`/api/login` in process, against a SQLite database made and seeded the way OMNI2 does it."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel.names import Attr
from services.common.passwords import dummy_hash, hash_password, verify_password
from services.common.tokens import AUDIENCE
from services.dashboard.app import create_app
from services.dashboard.login import login_router
from services.dashboard.settings import DashboardSettings
from services.db import Database
from services.db.repository import users as users_repo
from services.db.seed import seed_demo
from tests.db import Admin

SECRET = "test-secret-0123456789abcdef0123456789"


def settings(url: str, **overrides: Any) -> DashboardSettings:
    return DashboardSettings(  # type: ignore[call-arg]
        OMNI_JWT_SECRET=SECRET, database_url=url, **overrides
    )


async def _omni2_database(url: str) -> None:
    db = Database(url)
    try:
        await db.create_tables()
        await seed_demo(db)
    finally:
        await db.dispose()


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """A database as OMNI2 leaves it at start: tables, roles, demo users with their hashes."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'omni2.db'}"
    asyncio.run(_omni2_database(url))
    return url


def login(client: TestClient, user: str, password: str) -> Any:
    return client.post("/api/login", json={"username": user, "password": password})


def login_spans(spans: InMemorySpanExporter) -> list[Any]:
    found = [s for s in spans.get_finished_spans() if s.name == "POST /api/login"]
    assert found, "no server span for /api/login"
    return found


def test_a_demo_user_logs_in_with_the_hash_omni2_seeded(
    database_url: str, client_for: Callable[[FastAPI], TestClient], spans: InMemorySpanExporter
) -> None:
    client = client_for(create_app(settings(database_url)))
    response = login(client, "alice", "alice-demo")
    assert response.status_code == 200, response.text
    body = response.json()
    claims = jwt.decode(body["token"], SECRET, algorithms=["HS256"], audience=AUDIENCE)
    assert claims["sub"] == "alice" and body["user_id"] == "alice"
    (span,) = login_spans(spans)
    assert span.attributes is not None
    assert span.attributes[Attr.USER_ID] == "alice"
    assert span.attributes["http.response.status_code"] == 200


def test_the_database_holds_argon2id_hashes_not_passwords(database_url: str) -> None:
    stored = sqlite3.connect(database_url.removeprefix("sqlite+aiosqlite:///")).execute(
        "SELECT id, password_hash FROM users ORDER BY id"
    )
    rows = dict(stored.fetchall())
    assert set(rows) == {"alice", "bob", "carol", "ivan", "mallory", "tim"}
    for user, hashed in rows.items():
        assert hashed.startswith("$argon2id$"), user
        assert f"{user}-demo" not in hashed
        assert verify_password(hashed, f"{user}-demo")


def test_failures_carry_no_user_id_and_never_the_password(
    database_url: str, client_for: Callable[[FastAPI], TestClient], spans: InMemorySpanExporter
) -> None:
    client = client_for(create_app(settings(database_url)))
    wrong = "wrong-password-a81f0c"
    known, unknown = login(client, "alice", wrong), login(client, "nobody-x", wrong)
    assert known.status_code == unknown.status_code == 401
    assert known.json() == unknown.json() == {"detail": "invalid username or password"}
    for span in login_spans(spans):
        assert span.attributes is not None
        assert Attr.USER_ID not in span.attributes, "a failed login names a user"
        assert wrong not in span.to_json()


def test_the_verifier_runs_exactly_once_on_every_path(
    database_url: str, client_for: Callable[[FastAPI], TestClient]
) -> None:
    Admin(database_url)(lambda s: users_repo.add_user(s, "nopass", "user"))  # no password set
    calls: list[tuple[str, str]] = []

    def counting(stored: str, password: str) -> bool:
        calls.append((stored, password))
        return verify_password(stored, password)

    app = FastAPI()
    app.include_router(login_router(settings(database_url), verify=counting))
    client = client_for(app)
    alice_hash = Admin(database_url)(lambda s: users_repo.password_hash(s, "alice"))
    paths = {
        "known name, right password": (("alice", "alice-demo"), 200, alice_hash),
        "known name, wrong password": (("alice", "not-it-123"), 401, alice_hash),
        "unknown name": (("nobody", "alice-demo"), 401, dummy_hash()),
        "known name without a password": (("nopass", "anything-1"), 401, dummy_hash()),
    }
    for path, ((user, password), status, verified_against) in paths.items():
        calls.clear()
        assert login(client, user, password).status_code == status, path
        assert calls == [(verified_against, password)], f"{path}: {len(calls)} verifications"


def test_a_user_without_a_password_cannot_log_in_even_with_the_dummys(
    database_url: str, client_for: Callable[[FastAPI], TestClient]
) -> None:
    # Whatever the dummy hash matched, a user without a hash is refused.
    Admin(database_url)(lambda s: users_repo.add_user(s, "nopass", "user"))
    app = FastAPI()
    app.include_router(login_router(settings(database_url), verify=lambda _h, _p: True))
    client = client_for(app)
    assert login(client, "nopass", "anything-1").status_code == 401
    assert login(client, "nobody", "anything-1").status_code == 401
    assert login(client, "alice", "anything-1").status_code == 200


def test_failed_logins_per_user_get_429_with_retry_after_and_a_success_resets(
    database_url: str, client_for: Callable[[FastAPI], TestClient]
) -> None:
    Admin(database_url)(
        lambda s: users_repo.add_user(s, "dave", "user", password_hash=hash_password("dave-secret"))
    )
    app = create_app(settings(database_url, login_max_failures_per_user=3))
    client = client_for(app)
    for _ in range(2):
        assert login(client, "dave", "wrong-one").status_code == 401
    assert login(client, "dave", "dave-secret").status_code == 200  # resets dave's count
    for _ in range(3):
        assert login(client, "dave", "wrong-one").status_code == 401
    refused = login(client, "dave", "dave-secret")  # from this address, even the right one
    assert refused.status_code == 429
    retry_after = int(refused.headers["retry-after"])
    assert 290 <= retry_after <= 300
    assert refused.json() == {
        "detail": (
            f"too many failed logins for this user from this address; try again in {retry_after} s"
        ),
        "retry_after_s": retry_after,
    }
    assert login(client, "alice", "alice-demo").status_code == 200  # others may log in


def test_failed_logins_per_address_get_429(
    database_url: str, client_for: Callable[[FastAPI], TestClient]
) -> None:
    client = client_for(create_app(settings(database_url, login_max_failures_per_address=4)))
    for i in range(4):
        assert login(client, f"guess-{i}", "wrong-one").status_code == 401
    refused = login(client, "alice", "alice-demo")
    assert refused.status_code == 429
    assert "from this address" in refused.json()["detail"]
    assert int(refused.headers["retry-after"]) > 0


async def test_parallel_guesses_get_no_more_tries_than_sequential_ones(database_url: str) -> None:
    verified: list[str] = []

    def slow(stored: str, password: str) -> bool:
        verified.append(password)
        time.sleep(0.2)  # all requests arrive while the first ones are still verifying
        return False

    app = FastAPI()
    app.include_router(login_router(settings(database_url), verify=slow))
    transport = httpx.ASGITransport(app=app, client=("10.0.0.9", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://dashboard") as client:
        answers = await asyncio.gather(
            *(
                client.post("/api/login", json={"username": "alice", "password": f"guess-{i}"})
                for i in range(20)
            )
        )
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [401] * 5 + [429] * 15  # the default: 5 failures per user
    assert len(verified) == 5


def test_a_missing_database_is_503_with_a_reason_and_is_not_created(
    tmp_path: Path, client_for: Callable[[FastAPI], TestClient]
) -> None:
    path = tmp_path / "none" / "omni2.db"
    client = client_for(create_app(settings(f"sqlite+aiosqlite:///{path}")))
    for _ in range(8):  # more than the limit: an undecided attempt is no failure
        response = login(client, "alice", "alice-demo")
        assert response.status_code == 503
    assert response.json()["detail"] == (
        "login unavailable: the user database does not exist yet (OMNI2 creates it)"
    )
    assert not path.exists() and not path.parent.exists()


def test_a_database_without_tables_is_503_and_gets_no_tables(
    tmp_path: Path, client_for: Callable[[FastAPI], TestClient]
) -> None:
    path = tmp_path / "empty.db"
    sqlite3.connect(path).close()
    client = client_for(create_app(settings(f"sqlite+aiosqlite:///{path}")))
    response = login(client, "alice", "alice-demo")
    assert response.status_code == 503
    assert "users table is missing" in response.json()["detail"]
    tables = sqlite3.connect(path).execute("SELECT name FROM sqlite_master").fetchall()
    assert tables == []


def test_an_unreachable_postgresql_is_503_without_the_url(
    client_for: Callable[[FastAPI], TestClient],
) -> None:
    url = "postgresql+asyncpg://omni:s3cret-pw@127.0.0.1:9/omni2"  # port 9: nothing listens
    client = client_for(create_app(settings(url, database_timeout_s=3)))
    response = login(client, "alice", "alice-demo")
    assert response.status_code == 503
    detail = response.json()["detail"]
    assert detail.startswith("login unavailable: ")
    assert "s3cret-pw" not in detail and "127.0.0.1" not in detail


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"[" * 5_000,  # nesting, within the size limit
        json.dumps({"username": "alice"}).encode(),
        json.dumps({"username": "", "password": "x"}).encode(),
        json.dumps({"username": "a" * 129, "password": "secret-in-body"}).encode(),
        json.dumps({"username": "alice", "password": "p" * 1025}).encode(),
        json.dumps({"username": ["alice"], "password": "secret-in-body"}).encode(),
    ],
)
def test_a_malformed_body_is_422_and_never_echoed(
    body: bytes, database_url: str, client_for: Callable[[FastAPI], TestClient]
) -> None:
    client = client_for(create_app(settings(database_url)))
    response = client.post("/api/login", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert "secret-in-body" not in response.text and "ppppp" not in response.text
    assert "username" in response.json()["detail"]


def test_an_oversized_body_is_413(
    database_url: str, client_for: Callable[[FastAPI], TestClient]
) -> None:
    client = client_for(create_app(settings(database_url)))
    body = json.dumps({"username": "alice", "password": "x" * 20_000})
    response = client.post("/api/login", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 413


def test_the_database_url_is_a_secret_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    url = "postgresql+asyncpg://omni:s3cret-pw@db.example/omni2"
    monkeypatch.setenv("DASHBOARD_DATABASE_URL", url)
    monkeypatch.setenv("OMNI_JWT_SECRET", "k" * 32)
    loaded = DashboardSettings()
    assert loaded.database_url.get_secret_value() == url
    assert "s3cret-pw" not in repr(loaded) and "s3cret-pw" not in str(loaded.model_dump())
