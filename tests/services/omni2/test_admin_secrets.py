"""`omni-trace users` keeps secrets off its command line, where every user of the machine can
read them (/proc/PID/cmdline): `--password` and a `--database-url` holding a password are
refused with a reason and change nothing; a password comes on stdin, from a file or from
OMNI2_USER_PASSWORD, a database URL from OMNI2_DATABASE_URL / OMNI_TRACE_DATABASE_URL or a
file. And `passwd` and `block` revoke the user's tokens (its token generation goes up)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from services.common.passwords import verify_password
from services.db import Database
from services.db.repository import users as users_repo
from tests.db import Admin

OMNI_TRACE_USERS = [sys.executable, "-m", "omni_trace.cli", "users"]
ADMIN = [sys.executable, "-m", "services.omni2.admin"]
SECRET_URL = "postgresql+asyncpg://omni2:db-secret-pw@127.0.0.1:1/omni2"


@pytest.fixture
def db(tmp_path: Path) -> str:
    url = f"sqlite+aiosqlite:///{tmp_path / 'omni2.db'}"

    async def make() -> None:
        database = Database(url)
        try:
            await database.create_tables()
        finally:
            await database.dispose()

    asyncio.run(make())
    return url


def cli(
    argv: list[str], *args: str, env: dict[str, str] | None = None, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OMNI2_", "OMNI_TRACE_"))}
    return subprocess.run(
        [*argv, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        env=clean | (env or {}),
        check=False,
    )


def stored(db: str, user: str) -> tuple[str | None, int]:
    return Admin(db)(lambda s: users_repo.login_record(s, user))


@pytest.mark.parametrize("argv", [OMNI_TRACE_USERS, ADMIN])
def test_a_password_on_the_command_line_is_refused_and_nothing_changes(
    db: str, argv: list[str], tmp_path: Path
) -> None:
    done = cli(
        argv,
        "--stack-file" if argv is OMNI_TRACE_USERS else "--database-url",
        str(tmp_path / "none.json") if argv is OMNI_TRACE_USERS else db,
        "add",
        "dave",
        "--password",
        "dave-secret-1",
        env={"OMNI2_DATABASE_URL": db},
    )
    assert done.returncode == 2, done
    assert "--password is not accepted" in done.stderr and "--password-stdin" in done.stderr
    assert "dave-secret-1" not in done.stderr + done.stdout
    assert Admin(db)(lambda s: users_repo.load_user(s, "dave")) is None


@pytest.mark.parametrize("argv", [OMNI_TRACE_USERS, ADMIN])
def test_a_database_url_with_a_password_on_the_command_line_is_refused(argv: list[str]) -> None:
    done = cli(argv, "--database-url", SECRET_URL, "list")
    assert done.returncode == 2, done
    assert "--database-url holds a password" in done.stderr, done.stderr
    assert "DATABASE_URL" in done.stderr  # says what to use instead
    assert "db-secret-pw" not in done.stderr + done.stdout


@pytest.mark.slow  # waits on exports or timing: not in --quick
def test_a_password_by_stdin_file_or_environment_is_taken(db: str, tmp_path: Path) -> None:
    env = {"OMNI2_DATABASE_URL": db}
    assert (
        cli(ADMIN, "add", "dave", "--password-stdin", env=env, stdin="pw-stdin-1\n").returncode == 0
    )
    hashed, _ = stored(db, "dave")
    assert hashed is not None and verify_password(hashed, "pw-stdin-1")

    secret = tmp_path / "password"
    secret.write_text("pw-file-22\n")
    assert cli(ADMIN, "passwd", "dave", "--password-file", str(secret), env=env).returncode == 0
    hashed, _ = stored(db, "dave")
    assert hashed is not None and verify_password(hashed, "pw-file-22")

    done = cli(ADMIN, "passwd", "dave", env=env | {"OMNI2_USER_PASSWORD": "pw-env-333"})
    assert done.returncode == 0, done.stderr
    hashed, _ = stored(db, "dave")
    assert hashed is not None and verify_password(hashed, "pw-env-333")

    done = cli(ADMIN, "passwd", "dave", "--password-file", str(tmp_path / "missing"), env=env)
    assert done.returncode == 2 and "cannot read" in done.stderr


@pytest.mark.slow  # waits on exports or timing: not in --quick
def test_a_database_url_from_the_environment_or_a_file_is_taken(db: str, tmp_path: Path) -> None:
    no_stack = ["--stack-file", str(tmp_path / "none.json")]
    done = cli(OMNI_TRACE_USERS, *no_stack, "add", "erin", env={"OMNI_TRACE_DATABASE_URL": db})
    assert done.returncode == 0, done.stderr
    url_file = tmp_path / "database-url"
    url_file.write_text(f"{db}\n")
    done = cli(ADMIN, "--database-url-file", str(url_file), "list")
    assert done.returncode == 0 and "erin" in done.stdout, done.stderr
    done = cli(ADMIN, "list", env={"OMNI2_DATABASE_URL": db})
    assert done.returncode == 0 and "erin" in done.stdout, done.stderr


@pytest.mark.slow  # waits on exports or timing: not in --quick
def test_passwd_and_block_revoke_the_users_tokens(db: str) -> None:
    env = {"OMNI2_DATABASE_URL": db}
    assert (
        cli(ADMIN, "add", "dave", "--password-stdin", env=env, stdin="pw-stdin-1\n").returncode == 0
    )
    _, first = stored(db, "dave")
    assert (
        cli(ADMIN, "passwd", "dave", "--password-stdin", env=env, stdin="pw-2-abcd\n").returncode
        == 0
    )
    _, second = stored(db, "dave")
    assert cli(ADMIN, "block", "dave", "--reason", "test", env=env).returncode == 0
    _, third = stored(db, "dave")
    assert first < second < third
