"""`omni-trace users ...` against a fresh SQLite database."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from omni_trace.cli import main
from tests.pg import emptied


def run(capsys: pytest.CaptureFixture[str], db: str, *args: str) -> tuple[int, str, str]:
    code = main(["users", "--database-url", db, *args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'omni2.db'}"
    return asyncio.run(emptied(request.getfixturevalue("postgres_database")))


def test_list_add_block_limits_unblock(db: str, capsys: pytest.CaptureFixture[str]) -> None:
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
        "tools",
    ]
    rows = {line.split()[0]: line.split() for line in lines[2:] if " is blocked" not in line}
    assert rows["alice"][1:3] == ["user", "active"]
    assert rows["bob"][1] == "admin"
    assert rows["mallory"][2] == "blocked" and rows["ivan"][2] == "inactive"
    assert rows["tim"][3] == "120"
    assert "mallory is blocked: abusive prompts" in out

    assert run(capsys, db, "add", "dave", "--role", "viewer")[0] == 0
    assert run(capsys, db, "block", "dave", "--reason", "spam")[0] == 0
    assert (
        run(capsys, db, "limits", "dave", "--daily-tokens", "500", "--rate-per-minute", "3")[0] == 0
    )
    out = run(capsys, db, "list")[1]
    assert "dave     viewer  blocked   500" in out
    assert "dave is blocked: spam" in out
    assert run(capsys, db, "unblock", "dave")[1] == "unblocked dave\n"
    assert run(capsys, db, "deactivate", "dave")[0] == 0
    assert "dave     viewer  inactive  500" in run(capsys, db, "list")[1]
    assert run(capsys, db, "limits", "dave", "--daily-tokens", "role")[0] == 0
    assert "dave     viewer  inactive  20000" in run(capsys, db, "list")[1]


def test_errors_are_reported_with_exit_code_2(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, db, "block", "nobody", "--reason", "x")
    assert code == 2 and err == "omni-trace: no user 'nobody'\n"
    code, _, err = run(capsys, db, "add", "alice")
    assert code == 2 and "exists already" in err
    code, _, err = run(capsys, db, "add", "zed", "--role", "wizard")
    assert code == 2 and "no role 'wizard'" in err
    code, _, err = run(capsys, db, "limits", "alice")
    assert code == 2 and "nothing to set" in err
