"""`omni-trace users ...`: OMNI2's own admin command (`python -m services.omni2.admin`), run
on the running stack's database. The harness reads no module of OMNI2's: it passes the
arguments on, and the database URL (which may hold a password) in the environment."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from omni_trace.stack.paths import DEFAULT_STACK_FILE, REPO_ROOT
from omni_trace.stack.runner import StackInfo, require_stack_packages

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


def cmd_users(args: argparse.Namespace) -> int:
    require_stack_packages("omni-trace users")
    stack_file, rest = _stack_file(args.admin_args)
    env = {**os.environ, "OMNI2_ADMIN_PROG": "omni-trace users"}
    if stack_file.exists():
        url = StackInfo.read(stack_file).omni2_database_url
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
