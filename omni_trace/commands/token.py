"""`omni-trace token`: log in and print a JWT (for scripts)."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from omni_trace.commands.common import add_stack_file, password
from omni_trace.stack.client import login
from omni_trace.stack.info import StackInfo


def add_parser(sub: Any) -> None:
    token = sub.add_parser("token", help="log in and print a JWT (for scripts)")
    token.add_argument("--user", default="alice", help="user to log in as (default alice)")
    token.add_argument("--password", help="password (default: the demo user's)")
    add_stack_file(token)
    token.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    info = StackInfo.read(args.stack_file)
    print(asyncio.run(login(info.dashboard_url, args.user, password(args))))
    return 0
