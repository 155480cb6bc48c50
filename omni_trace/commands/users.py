"""`omni-trace users ...`: OMNI2's own admin command on the running stack's database. Every
option is the admin command's (its --help is the help) but --stack-file, which is ours; the
database URL goes in the environment (omni_trace/stack/users.py)."""

from __future__ import annotations

import argparse
import subprocess
from typing import Any

from omni_trace.errors import CliError
from omni_trace.stack.paths import REPO_ROOT
from omni_trace.stack.runner import require_stack_packages
from omni_trace.stack.users import ADMIN, admin_env, split_stack_file, url_with_password


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
    users.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    require_stack_packages("omni-trace users")
    stack_file, rest = split_stack_file(args.admin_args)
    if url_with_password(rest):
        # Refused here already: the admin command's own arguments would show it again.
        raise CliError(
            "--database-url holds a password, and every user of this machine can read a "
            "command line: pass it in OMNI_TRACE_DATABASE_URL (or OMNI2_DATABASE_URL), or "
            "--database-url-file FILE; nothing done",
            prog="omni-trace users",
        )
    env = admin_env(stack_file)
    return subprocess.run([*ADMIN, *rest], env=env, cwd=REPO_ROOT, check=False).returncode
