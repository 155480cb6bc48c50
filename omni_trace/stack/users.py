"""`omni-trace users ...`: OMNI2's own admin command (`python -m services.omni2.admin`), run
on the running stack's database. The harness reads no module of OMNI2's: it passes the
arguments on, and the database URL (which may hold a password) in the environment: the
stack file's, else OMNI_TRACE_DATABASE_URL (or OMNI2_DATABASE_URL). A `--database-url` that
holds a password is refused before anything runs: the process list shows every argument."""

from __future__ import annotations

import argparse
import itertools
import os
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from omni_trace.stack.paths import DEFAULT_STACK_FILE, REPO_ROOT
from omni_trace.stack.runner import StackInfo, require_stack_packages
from omni_trace.stack.settings import StackSettings

ADMIN = [sys.executable, "-m", "services.omni2.admin"]


def _stack_file(args: list[str]) -> tuple[Path, list[str]]:
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


def cmd_users(args: argparse.Namespace) -> int:
    require_stack_packages("omni-trace users")
    stack_file, rest = _stack_file(args.admin_args)
    if url_with_password(rest):
        # Refused here already: the admin command's own arguments would show it again.
        print(
            "omni-trace users: --database-url holds a password, and every user of this "
            "machine can read a command line: pass it in OMNI_TRACE_DATABASE_URL (or "
            "OMNI2_DATABASE_URL), or --database-url-file FILE; nothing done",
            file=sys.stderr,
        )
        return 2
    env = {**os.environ, "OMNI2_ADMIN_PROG": "omni-trace users"}
    url = StackInfo.read(stack_file).omni2_database_url if stack_file.exists() else None
    if not url and (configured := StackSettings().database_url) is not None:
        url = configured.get_secret_value()
    if url:
        env["OMNI2_DATABASE_URL"] = url
    return subprocess.run([*ADMIN, *rest], env=env, cwd=REPO_ROOT, check=False).returncode


def add_parser(sub: Any) -> None:
    users = sub.add_parser(
        "users",
        help="list, add, block, unblock users of OMNI2, set their passwords and limits",
        description="OMNI2's admin command on the running stack's database (from the stack "
        "file, default var/stack.json; --database-url for another): `omni-trace users --help`.",
        add_help=False,
        prefix_chars="\0",  # every option is OMNI2's admin command's (--stack-file is ours)
    )
    users.add_argument("admin_args", nargs=argparse.REMAINDER)
    users.set_defaults(func=cmd_users)
