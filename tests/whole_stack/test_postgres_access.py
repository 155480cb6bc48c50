"""The runner's PostgreSQL (`omni-trace up --database postgres`, `--scale`) lets in only who
holds the run's password, lives in a directory made fresh for it, and runs with a minimal
environment (README.md, "Security"). Each test attacks the real server the runner starts."""

from __future__ import annotations

import asyncio
import os
import pwd
import stat
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import pytest

from omni_trace.stack.ports import free_port
from omni_trace.stack.postgres import PostgresServer, PostgresUnavailable

# Starts stacks of its own (or runs for long): not in `scripts/test --quick`.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    run_dir = tmp_path_factory.mktemp("pg-run")
    server = PostgresServer.for_run_dir(run_dir, free_port())
    server.start()
    try:
        yield server
    finally:
        server.remove()


def _connect(dsn: str, **kwargs: object) -> None:
    async def attempt() -> None:
        conn = await asyncpg.connect(dsn, timeout=10, **kwargs)
        await conn.close()

    asyncio.run(attempt())


def test_a_connection_without_the_password_is_refused(server: PostgresServer) -> None:
    url = urlsplit(server.base_url.replace("postgresql+asyncpg://", "postgresql://"))
    bare = f"postgresql://postgres@{url.hostname}:{url.port}/postgres"
    with pytest.raises(asyncpg.InvalidPasswordError):
        _connect(bare)  # what any local user could do with trust auth
    assert url.password, "the URL carries the run's password"
    with pytest.raises(asyncpg.InvalidPasswordError):
        _connect(bare, password="guess")
    # Nor through the Unix socket, for a user who can reach it.
    with pytest.raises(asyncpg.InvalidPasswordError):
        _connect(f"postgresql://postgres@/postgres?host={server.root}&port={url.port}")
    # The run's password is what lets OMNI2 in.
    _connect(f"postgresql://postgres:{url.password}@{url.hostname}:{url.port}/postgres")


def test_the_password_is_made_per_run_and_kept_private(server: PostgresServer) -> None:
    first = server.base_url
    server.stop()
    server.start()
    assert server.base_url != first  # a new password each start
    url = urlsplit(server.base_url.replace("postgresql+asyncpg://", "postgresql://"))
    _connect(f"postgresql://postgres:{url.password}@{url.hostname}:{url.port}/postgres")
    with pytest.raises(asyncpg.InvalidPasswordError):
        _connect(first.replace("postgresql+asyncpg://", "postgresql://") + "/postgres")
    mode = server.password_file.stat().st_mode
    assert stat.S_IMODE(mode) == 0o600 and server.password_file.stat().st_uid == os.geteuid()
    assert stat.S_IMODE(server.root.stat().st_mode) == 0o700


def test_the_server_runs_with_a_minimal_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOME_PROVIDER_API_KEY", "marker-provider-key")
    monkeypatch.setenv("OMNI_JWT_SECRET", "marker-jwt-secret-marker-jwt-secret")
    server = PostgresServer.for_run_dir(tmp_path, free_port())
    try:
        server.start()
        pid = int((server.data / "postmaster.pid").read_text().split()[0])
        environ = Path(f"/proc/{pid}/environ").read_bytes()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        for secret in (b"marker-provider-key", b"marker-jwt-secret", b"SOME_PROVIDER_API_KEY"):
            assert secret not in environ
        password = urlsplit(server.base_url).password
        assert password and password.encode() not in environ + cmdline
    finally:
        server.remove()


def _victim(tmp_path: Path) -> Path:
    victim = tmp_path / "victim"
    victim.mkdir(mode=0o755)
    (victim / "keep.txt").write_text("precious\n")
    return victim


def _unchanged(victim: Path) -> None:
    info = victim.stat()
    assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (0, 0o755)
    assert sorted(p.name for p in victim.iterdir()) == ["keep.txt"]
    assert (victim / "keep.txt").read_text() == "precious\n"


@pytest.fixture
def as_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("the cluster lives outside the run dir only when the runner is root")


@pytest.mark.usefixtures("as_root")
def test_a_symlink_planted_at_the_cluster_path_is_refused_and_changes_nothing(
    tmp_path: Path,
) -> None:
    """As root the cluster directory is a predictable name in the shared temp dir: a local
    user who plants a symlink there must not get root to hand its target to `postgres`."""
    victim = _victim(tmp_path)
    server = PostgresServer.for_run_dir(tmp_path / "run", free_port())
    assert not server.root.is_relative_to(tmp_path)  # in the shared temp dir
    server.root.symlink_to(victim)
    try:
        with pytest.raises(PostgresUnavailable, match="symbolic link") as refused:
            server.start()
        assert str(server.root) in str(refused.value)
        _unchanged(victim)
        assert server.root.is_symlink()  # left for the admin to see, not followed
    finally:
        server.root.unlink()


@pytest.mark.usefixtures("as_root")
def test_a_directory_another_user_planted_at_the_cluster_path_is_refused(
    tmp_path: Path,
) -> None:
    server = PostgresServer.for_run_dir(tmp_path / "run", free_port())
    nobody = pwd.getpwnam("nobody")
    server.root.mkdir(mode=0o700)
    os.chown(server.root, nobody.pw_uid, nobody.pw_gid)
    try:
        with pytest.raises(PostgresUnavailable, match="not this stack's"):
            server.start()
        assert server.root.stat().st_uid == nobody.pw_uid  # not taken over
        assert list(server.root.iterdir()) == []
    finally:
        server.root.rmdir()
