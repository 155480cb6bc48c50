"""OMNI2's admin command (what `omni-trace users ...` runs) against a fresh SQLite database
(and PostgreSQL)."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import pytest

from services.common.passwords import verify_password
from services.db import Database
from services.db.repository import users as users_repo
from services.db.seed import seed_demo
from services.omni2.admin import main
from tests.db import Admin
from tests.pg import emptied


@pytest.fixture(autouse=True)
def called_as_omni_trace_users(monkeypatch: pytest.MonkeyPatch) -> None:
    """As `omni-trace users` runs it: its messages name that command."""
    monkeypatch.setenv("OMNI2_ADMIN_PROG", "omni-trace users")


def run(capsys: pytest.CaptureFixture[str], db: str, *args: str) -> tuple[int, str, str]:
    # In the environment, as a URL with a password must come (the command line shows it).
    with pytest.MonkeyPatch.context() as env:
        env.setenv("OMNI2_DATABASE_URL", db)
        code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'omni2.db'}"
    return asyncio.run(emptied(request.getfixturevalue("postgres_database")))


async def _started_omni2(url: str) -> None:
    """What OMNI2 does to its database when it starts with demo users on."""
    database = Database(url)
    try:
        await database.create_tables()
        await seed_demo(database)
    finally:
        await database.dispose()


def user_ids(db: str) -> set[str]:
    return {u.user_id for u in Admin(db)(users_repo.list_users)}


def test_list_add_block_limits_unblock(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    asyncio.run(_started_omni2(db))
    code, out, _ = run(capsys, db, "list")
    assert code == 0
    lines = out.splitlines()
    assert lines[1].split() == [
        "user",
        "role",
        "status",
        "tokens/day",
        "cost/day",
        "msgs/min",
        "conns",
        "tools",
    ]
    rows = {line.split()[0]: line.split() for line in lines[2:] if " is blocked" not in line}
    assert rows["alice"][1:3] == ["user", "active"]
    assert rows["bob"][1] == "admin"
    assert rows["mallory"][2] == "blocked" and rows["ivan"][2] == "inactive"
    assert rows["tim"][3] == "120"
    assert "mallory is blocked: abusive prompts" in out
    assert "no password" not in out  # the demo users have theirs

    assert run(capsys, db, "add", "dave", "--role", "viewer")[0] == 0
    assert run(capsys, db, "block", "dave", "--reason", "spam")[0] == 0
    assert (
        run(capsys, db, "limits", "dave", "--daily-tokens", "500", "--rate-per-minute", "3")[0] == 0
    )
    out = run(capsys, db, "list")[1]
    assert "dave     viewer  blocked   500" in out
    assert "dave is blocked: spam" in out
    assert "dave has no password and cannot log in: omni-trace users passwd dave" in out
    assert run(capsys, db, "unblock", "dave")[1] == "unblocked dave\n"
    assert run(capsys, db, "deactivate", "dave")[0] == 0
    assert "dave     viewer  inactive  500" in run(capsys, db, "list")[1]
    assert run(capsys, db, "limits", "dave", "--daily-tokens", "role")[0] == 0
    assert "dave     viewer  inactive  20000" in run(capsys, db, "list")[1]
    assert run(capsys, db, "limits", "dave", "--max-connections", "2")[0] == 0
    assert "dave     viewer  inactive  20000" in run(capsys, db, "list")[1]
    (dave,) = [u for u in Admin(db)(users_repo.list_users) if u.user_id == "dave"]
    assert dave.max_connections == 2


def test_a_database_url_never_gets_demo_users(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    # A new database: tables and the built-in roles, no demo user (none of their passwords).
    code, out, _ = run(capsys, db, "list")
    assert code == 0 and len(out.splitlines()) == 2, out  # the URL line and the header
    assert user_ids(db) == set()
    assert run(capsys, db, "add", "dave", "--role", "user")[0] == 0
    # Every later command leaves it so, too.
    for args in (("list",), ("block", "dave", "--reason", "x"), ("unblock", "dave")):
        assert run(capsys, db, *args)[0] == 0
    assert user_ids(db) == {"dave"}


def test_add_with_a_password_makes_a_user_who_can_log_in(
    db: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("dave-secret-1\n"))
    code, out, err = run(capsys, db, "add", "dave", "--password-stdin")
    assert code == 0 and out == "added dave (user)\n" and err == ""
    stored = Admin(db)(lambda s: users_repo.password_hash(s, "dave"))
    assert stored is not None and stored.startswith("$argon2id$")
    assert verify_password(stored, "dave-secret-1")
    assert not verify_password(stored, "dave-secret-2")


def test_add_without_a_password_says_how_to_set_one(
    db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, db, "add", "erin")
    assert code == 0
    assert err == "erin has no password and cannot log in yet: omni-trace users passwd erin\n"
    assert Admin(db)(lambda s: users_repo.password_hash(s, "erin")) is None


def test_passwd_from_stdin_from_the_prompt_and_remove(
    db: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    run(capsys, db, "add", "dave")

    def stored() -> str | None:
        return Admin(db)(lambda s: users_repo.password_hash(s, "dave"))

    monkeypatch.setattr("sys.stdin", io.StringIO("from-stdin-pw\nignored\n"))
    assert run(capsys, db, "passwd", "dave", "--password-stdin")[1] == "password of dave set\n"
    hashed = stored()
    assert hashed is not None and verify_password(hashed, "from-stdin-pw")

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    answers = iter(["from-prompt-pw", "from-prompt-pw"])
    monkeypatch.setattr("sys.stdin", Terminal())
    monkeypatch.setattr("getpass.getpass", lambda prompt: next(answers))
    assert run(capsys, db, "passwd", "dave")[0] == 0
    hashed = stored()
    assert hashed is not None and verify_password(hashed, "from-prompt-pw")

    answers = iter(["first-answer", "second-answer"])
    code, _, err = run(capsys, db, "passwd", "dave")
    assert code == 2 and err == "omni-trace users: the two passwords differ; nothing changed\n"
    assert stored() == hashed

    assert run(capsys, db, "passwd", "dave", "--remove")[0] == 0
    assert stored() is None


def test_passwd_refuses_what_it_cannot_set(
    db: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("dave-secret-1\n"))
    run(capsys, db, "add", "dave", "--password-stdin")
    before = Admin(db)(lambda s: users_repo.password_hash(s, "dave"))
    monkeypatch.setattr("sys.stdin", io.StringIO(""))  # not a terminal, nothing given
    code, _, err = run(capsys, db, "passwd", "dave")
    assert code == 2 and "pass --password-stdin" in err
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    code, _, err = run(capsys, db, "passwd", "dave", "--password-stdin")
    assert code == 2 and "at least 8 characters" in err
    monkeypatch.setattr("sys.stdin", io.StringIO("long-enough\n"))
    code, _, err = run(capsys, db, "passwd", "nobody", "--password-stdin")
    assert code == 2 and err == "omni-trace users: no user 'nobody'\n"
    assert Admin(db)(lambda s: users_repo.password_hash(s, "dave")) == before


def test_errors_are_reported_with_exit_code_2(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, db, "add", "alice")[0] == 0
    code, _, err = run(capsys, db, "block", "nobody", "--reason", "x")
    assert code == 2 and err == "omni-trace users: no user 'nobody'\n"
    code, _, err = run(capsys, db, "add", "alice")
    assert code == 2 and "exists already" in err
    code, _, err = run(capsys, db, "add", "zed", "--role", "wizard")
    assert code == 2 and "no role 'wizard'" in err
    code, _, err = run(capsys, db, "limits", "alice")
    assert code == 2 and "nothing to set" in err
