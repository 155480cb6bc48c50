"""A PostgreSQL server for OMNI2, run by the runner: Debian's binaries (the `postgresql`
package), a cluster of its own on the loopback address, where every connection (TCP or the
Unix socket) must give the password made for this start (scram-sha-256).

PostgreSQL refuses to run as root: as root, initdb and pg_ctl run as the `postgres` OS user,
and the cluster lives in a directory that user owns outside the (private, 0700) run directory.
That directory has a predictable name in the shared temp dir, so it is made fresh, or used
only if it is already this stack's (a real directory, owned by us or `postgres`, 0700): a
symlink or a directory someone else planted there is refused, never followed or chown-ed.
"""

from __future__ import annotations

import base64
import contextlib
import glob
import hashlib
import hmac
import os
import pwd
import secrets
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

from omni_trace.errors import CliError
from omni_trace.stack.environment import RUNTIME_ALLOWED, inherited
from omni_trace.stack.paths import write_private

# Every connection, local socket or TCP, gives the password (no `trust`, no `peer`).
PG_HBA = """\
# Written by omni-trace at each start: every connection gives the run's password.
local all all scram-sha-256
host  all all all scram-sha-256
"""
_SCRAM_ITERATIONS = 4096


class PostgresUnavailable(CliError, RuntimeError):
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


def _cluster_owner() -> tuple[int, int]:
    """Who owns the cluster's files: `postgres` when we are root, else us."""
    if os.geteuid() != 0:
        return os.geteuid(), os.getegid()
    user = pwd.getpwnam("postgres")
    return user.pw_uid, user.pw_gid


def _minimal_env(**extra: str) -> dict[str, str]:
    """The server and its tools see what they need to run (PATH, locale, TZ), no more: not the
    provider keys or tokens of the shell that started the stack."""
    return {**inherited(RUNTIME_ALLOWED), **extra}


def scram_verifier(password: str) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL stores (RFC 5803), made here so that the password
    itself never reaches the server, not even in the statement that sets it."""
    salt = secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, _SCRAM_ITERATIONS)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()

    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode()

    return f"SCRAM-SHA-256${_SCRAM_ITERATIONS}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


class PostgresServer:
    """One cluster in `root` (kept across restarts: the data outlives the server process).
    The superuser's password is made anew at each start and kept, 0600, in `password_file`
    (default: in `root`)."""

    def __init__(
        self,
        root: Path,
        port: int,
        host: str = "127.0.0.1",
        password_file: Path | None = None,
    ) -> None:
        self.bindir = postgres_bindir()
        self.root, self.port, self.host = root, port, host
        self.data, self.log = root / "data", root / "postgres.log"
        self.password_file = password_file or root / "superuser.password"

    @classmethod
    def for_run_dir(cls, run_dir: Path, port: int, host: str = "127.0.0.1") -> PostgresServer:
        """The cluster of a run directory: inside it, or as root beside it in the temp dir
        (the `postgres` user cannot enter a root-owned 0700 run directory). Its password
        stays in the run directory, private to the stack's user."""
        password_file = run_dir / "postgres.password"
        if os.geteuid() != 0:
            return cls(run_dir / "postgres", port, host, password_file)
        key = hashlib.sha256(str(run_dir.resolve()).encode()).hexdigest()[:12]
        root = Path(tempfile.gettempdir()) / f"omni-trace-pg-{key}"
        return cls(root, port, host, password_file)

    @property
    def password(self) -> str:
        try:
            return self.password_file.read_text().strip()
        except FileNotFoundError:
            return ""  # not started yet: no password, so no connection either

    @property
    def base_url(self) -> str:
        login = f"postgres:{self.password}" if self.password else "postgres"
        return f"postgresql+asyncpg://{login}@{self.host}:{self.port}"

    def _run(self, argv: list[str], what: str, stdin: str | None = None) -> None:
        run = subprocess.run(
            _as_postgres(argv),
            input=stdin,
            env=_minimal_env(),
            capture_output=True,
            text=True,
            check=False,
        )
        if run.returncode != 0:
            detail = (run.stderr or run.stdout)[-2000:]
            raise PostgresUnavailable(f"could not {what}: {detail}")

    def start(self) -> str:
        """Start (initialising the cluster the first time) with a fresh password; returns the
        base URL, which holds it."""
        self._claim_root()
        if not (self.data / "PG_VERSION").exists():
            initdb = [str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres"]
            # `reject` until PG_HBA replaces it below, before the server first starts.
            initdb += ["--auth=reject", "--no-sync", "-E", "UTF8"]
            self._run(initdb, "initialise a PostgreSQL cluster")
        self._write_hba()  # also turns a cluster an older omni-trace made with trust auth
        self._set_password()
        options = f"-p {self.port} -k {self.root} -c listen_addresses={self.host}"
        start = [str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log)]
        self._run([*start, "-o", options, "-w", "-t", "30", "start"], "start PostgreSQL")
        return self.base_url

    def _claim_root(self) -> None:
        """`root` made fresh (0700, then given to the cluster's owner through the directory's
        own descriptor), or used as it is if it is already ours; anything else is refused and
        left as it was."""
        uid, gid = _cluster_owner()
        self.root.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):  # what is there is checked below
            os.mkdir(self.root, 0o700)  # never follows a symlink planted at the name
        try:
            fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        except OSError as err:
            what = "a symbolic link" if self.root.is_symlink() else "not a directory"
            raise self._not_ours(what) from err
        try:
            info = os.fstat(fd)
            if info.st_uid not in (os.geteuid(), uid):
                raise self._not_ours(f"owned by uid {info.st_uid}")
            if stat.S_IMODE(info.st_mode) & 0o077:
                raise self._not_ours(f"mode {stat.S_IMODE(info.st_mode):o}, open to others")
            if (info.st_uid, info.st_gid) != (uid, gid):
                os.fchown(fd, uid, gid)
        finally:
            os.close(fd)

    def _not_ours(self, why: str) -> PostgresUnavailable:
        return PostgresUnavailable(
            f"{self.root} exists and is not this stack's PostgreSQL directory ({why}; the "
            "symbolic link is not followed): refusing to start PostgreSQL there. Remove it "
            "if it is yours, or use another --run-dir."
        )

    def _write_hba(self) -> None:
        # Opened, not replaced: the file keeps the owner (postgres) that the server reads it as.
        path = self.data / "pg_hba.conf"
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_NOFOLLOW)
        with os.fdopen(fd, "w") as out:
            out.write(PG_HBA)

    def _set_password(self) -> None:
        """A new superuser password for this start, set in single-user mode (the server is
        not running, so nothing can connect meanwhile), then kept 0600 for our clients."""
        password = secrets.token_urlsafe(32)
        # Dollar-quoted: a verifier holds no `$$`.
        sql = f"ALTER ROLE postgres PASSWORD $${scram_verifier(password)}$$;\n"
        single = [str(self.bindir / "postgres"), "--single", "-D", str(self.data), "postgres"]
        self._run(single, "set the PostgreSQL password", stdin=sql)
        write_private(self.password_file, password + "\n")

    def create_database(self, name: str) -> str:
        """The database `name` (created if missing); its SQLAlchemy URL."""
        createdb = [str(self.bindir / "createdb"), "-h", self.host, "-p", str(self.port)]
        run = subprocess.run(
            [*createdb, "-U", "postgres", "-w", name],
            # The password in the environment of our own client only, never its argv.
            env=_minimal_env(PGPASSWORD=self.password),
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
        self.password_file.unlink(missing_ok=True)

    def stop(self, mode: str = "fast") -> None:
        subprocess.run(
            _as_postgres([str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", mode, "stop"]),
            env=_minimal_env(),
            capture_output=True,
            check=False,
        )
