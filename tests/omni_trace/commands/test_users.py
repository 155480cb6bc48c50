"""`omni-trace users` runs OMNI2's own admin command on the running stack's database: the
harness passes the arguments on and the database URL in the environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from omni_trace.cli import main
from omni_trace.stack.runner import StackInfo


def _stack_file(tmp_path: Path, database_url: str) -> Path:
    path = tmp_path / "stack.json"
    urls = dict.fromkeys(
        ["dashboard_url", "dashboard_ws_url", "traefik_url", "traefik_ws_url", "auth_url"], ""
    )
    StackInfo(
        **urls,
        omni2_url="",
        omni2_ws_url="",
        jaeger_query_url="",
        otlp_http_endpoint="",
        logs_dir="",
        traefik_access_log="",
        omni2_database_url=database_url,
    ).write(path)
    return path


def test_users_act_on_the_stack_files_database(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "omni2.db"
    stack_file = str(_stack_file(tmp_path, f"sqlite+aiosqlite:///{db}"))
    # --stack-file is the harness's, before or after OMNI2's own arguments.
    assert main(["users", "--stack-file", stack_file, "add", "dave", "--role", "viewer"]) == 0
    assert main(["users", "list", f"--stack-file={stack_file}"]) == 0
    out, err = capfd.readouterr()
    assert "added dave (viewer)" in out and f"# sqlite+aiosqlite:///{db}" in out
    assert "dave has no password and cannot log in yet: omni-trace users passwd dave" in err
    assert db.exists()
    # OMNI2's errors and exit codes come through, named as the command the user typed.
    assert main(["users", "--stack-file", stack_file, "block", "nobody", "--reason", "x"]) == 2
    assert capfd.readouterr().err == "omni-trace users: no user 'nobody'\n"


def test_users_help_is_omni2s_admin_commands(capfd: pytest.CaptureFixture[str]) -> None:
    assert main(["users", "--help"]) == 0
    out = capfd.readouterr().out
    assert out.startswith("usage: omni-trace users")
    assert "load-users" in out and "passwd" in out
