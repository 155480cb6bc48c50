"""A PostgreSQL server for OMNI2, run by the runner: Debian's binaries (the `postgresql`
package), a cluster of its own with trust auth on the loopback address only.

PostgreSQL refuses to run as root: as root, initdb and pg_ctl run as the `postgres` OS user,
and the cluster lives in a directory that user owns outside the (private, 0700) run directory.
"""

from __future__ import annotations

import glob
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path


class PostgresUnavailable(RuntimeError):
    pass


def postgres_bindir() -> Path:
    """The newest installed PostgreSQL's binaries."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4])
    )
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).resolve().parent
    raise PostgresUnavailable(
        "PostgreSQL is not installed (Debian: apt-get install postgresql; scripts/bootstrap "
        "does this)"
    )


def _as_postgres(argv: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return argv
    return ["runuser", "-u", "postgres", "--", *argv]


class PostgresServer:
    """One cluster in `root` (kept across restarts: the data outlives the server process)."""

    def __init__(self, root: Path, port: int, host: str = "127.0.0.1") -> None:
        self.bindir = postgres_bindir()
        self.root, self.port, self.host = root, port, host
        self.data, self.log = root / "data", root / "postgres.log"

    @classmethod
    def for_run_dir(cls, run_dir: Path, port: int, host: str = "127.0.0.1") -> PostgresServer:
        """The cluster of a run directory: inside it, or as root beside it in the temp dir
        (the `postgres` user cannot enter a root-owned 0700 run directory)."""
        if os.geteuid() != 0:
            return cls(run_dir / "postgres", port, host)
        key = hashlib.sha256(str(run_dir.resolve()).encode()).hexdigest()[:12]
        return cls(Path(tempfile.gettempdir()) / f"omni-trace-pg-{key}", port, host)

    @property
    def base_url(self) -> str:
        return f"postgresql+asyncpg://postgres@{self.host}:{self.port}"

    def _run(self, argv: list[str], what: str) -> None:
        run = subprocess.run(_as_postgres(argv), capture_output=True, text=True, check=False)
        if run.returncode != 0:
            detail = (run.stderr or run.stdout)[-2000:]
            raise PostgresUnavailable(f"could not {what}: {detail}")

    def start(self) -> str:
        """Start (initialising the cluster the first time); returns the base URL."""
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
        if not (self.data / "PG_VERSION").exists():
            initdb = [str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres"]
            initdb += ["--auth=trust", "--no-sync", "-E", "UTF8"]
            self._run(initdb, "initialise a PostgreSQL cluster")
        options = f"-p {self.port} -k {self.root} -c listen_addresses={self.host}"
        start = [str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log)]
        self._run([*start, "-o", options, "-w", "-t", "30", "start"], "start PostgreSQL")
        return self.base_url

    def create_database(self, name: str) -> str:
        """The database `name` (created if missing); its SQLAlchemy URL."""
        createdb = [str(self.bindir / "createdb"), "-h", self.host, "-p", str(self.port)]
        run = subprocess.run(
            _as_postgres([*createdb, "-U", "postgres", name]),
            capture_output=True,
            text=True,
            check=False,
        )
        if run.returncode != 0 and "already exists" not in run.stderr:
            raise PostgresUnavailable(f"could not create database {name}: {run.stderr}")
        return f"{self.base_url}/{name}"

    def remove(self) -> None:
        """Stop the server and delete its cluster (a test's throwaway data)."""
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def stop(self, mode: str = "fast") -> None:
        subprocess.run(
            _as_postgres([str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", mode, "stop"]),
            capture_output=True,
            check=False,
        )
