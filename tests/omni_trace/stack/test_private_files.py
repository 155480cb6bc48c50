"""The files the runner writes where another user may plant a name first (the stack file's
directory, the run directory) are made fresh: a symlink at a predictable name is never
written through (README.md, "Security")."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from omni_trace.stack import Stack, StackInfo
from omni_trace.stack.paths import write_private
from omni_trace.stack.ports import Ports
from omni_trace.stack.runner import StackError
from omni_trace.stack.settings import StackSettings


def _info(tmp_path: Path) -> StackInfo:
    settings = StackSettings(
        jaeger_query_url="http://127.0.0.1:9", jaeger_otlp_endpoint="http://127.0.0.1:9"
    )
    return Stack(tmp_path / "run", Ports(), settings, progress=lambda _: None).info


def test_a_symlink_planted_at_the_stack_files_tmp_name_is_not_written_through(
    tmp_path: Path,
) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    shared = tmp_path / "shared"
    shared.mkdir()
    path = shared / "stack.json"
    planted = path.with_suffix(".tmp")
    planted.symlink_to(victim)

    info = _info(tmp_path)
    info.write(path)

    assert victim.read_text() == "precious\n"  # the target is unchanged
    assert planted.is_symlink() and planted.resolve() == victim  # and so is the symlink
    assert not path.is_symlink()
    assert json.loads(path.read_text())["dashboard_url"] == info.dashboard_url
    assert path.stat().st_mode & 0o777 == 0o600
    assert StackInfo.read(path) == info
    # No temporary file is left behind.
    assert sorted(p.name for p in shared.iterdir()) == ["stack.json", "stack.tmp"]


def test_a_symlink_at_the_stack_file_itself_is_replaced_not_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    path = tmp_path / "stack.json"
    path.symlink_to(victim)
    _info(tmp_path).write(path)
    assert victim.read_text() == "precious\n"
    assert not path.is_symlink() and path.stat().st_mode & 0o777 == 0o600


def test_write_private_leaves_nothing_behind_when_it_fails(tmp_path: Path) -> None:
    target = tmp_path / "a-directory"
    target.mkdir()
    with pytest.raises(OSError):
        write_private(target, "text")  # a rename over a directory fails
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-directory"]


def test_a_run_directory_another_user_made_is_refused(tmp_path: Path) -> None:
    """A run directory in a shared place (e.g. /tmp) that someone else created first would
    hold this stack's configs, credentials and database: refused, not chmod-ed and used."""
    if os.geteuid() != 0:
        pytest.skip("making a directory another user owns needs root")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    os.chown(run_dir, 12345, 12345)  # another local user's, found at our run dir's path
    run_dir.chmod(0o777)
    settings = StackSettings(
        jaeger_query_url="http://127.0.0.1:9", jaeger_otlp_endpoint="http://127.0.0.1:9"
    )
    stack = Stack(run_dir, Ports.free(), settings, progress=lambda _: None)
    with pytest.raises(StackError, match="not owned by this user"), stack:
        pass  # (stopped on the way out, if it ever started)
    assert run_dir.stat().st_mode & 0o777 == 0o777  # nothing was changed
    assert list(run_dir.iterdir()) == []
