"""How `omni-trace users ...` (omni_trace/commands/users.py) runs OMNI2's own admin command
(`python -m services.omni2.admin`) on the running stack's database. The harness reads no
module of OMNI2's: it passes the arguments on, and the database URL (which may hold a
password) in the environment: the stack file's, else OMNI_TRACE_DATABASE_URL (or
OMNI2_DATABASE_URL). A `--database-url` that holds a password is refused before anything
runs: the process list shows every argument."""

from __future__ import annotations

import itertools
import os
import sys
from pathlib import Path
from urllib.parse import urlsplit

from omni_trace.stack.info import StackInfo
from omni_trace.stack.paths import DEFAULT_STACK_FILE
from omni_trace.stack.settings import StackSettings

ADMIN = [sys.executable, "-m", "services.omni2.admin"]


def split_stack_file(args: list[str]) -> tuple[Path, list[str]]:
    """`--stack-file PATH` is ours, wherever it is given; the rest is OMNI2's."""
    rest, path = [], DEFAULT_STACK_FILE
    it = iter(args)
    for arg in it:
        if arg == "--stack-file":
            path = Path(next(it, ""))
        elif arg.startswith("--stack-file="):
            path = Path(arg.split("=", 1)[1])
        else:
            rest.append(arg)
    return path, rest


def url_with_password(args: list[str]) -> bool:
    """Whether a `--database-url` among the arguments holds a password."""
    urls = [b for a, b in itertools.pairwise(args) if a == "--database-url"]
    urls += [a.split("=", 1)[1] for a in args if a.startswith("--database-url=")]
    try:
        return any(urlsplit(url).password is not None for url in urls)
    except ValueError:
        return False  # not a URL: OMNI2's command says so


def admin_env(stack_file: Path) -> dict[str, str]:
    """OMNI2's admin command's environment: ours, with the database URL of the stack file,
    else of OMNI_TRACE_DATABASE_URL, where the process list does not show it."""
    env = {**os.environ, "OMNI2_ADMIN_PROG": "omni-trace users"}
    url = StackInfo.read(stack_file).omni2_database_url if stack_file.exists() else None
    if not url and (configured := StackSettings().database_url) is not None:
        url = configured.get_secret_value()
    if url:
        env["OMNI2_DATABASE_URL"] = url
    return env
