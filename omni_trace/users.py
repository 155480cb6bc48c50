"""`omni-trace users ...`: OMNI2's users, roles and limits, straight in its database.

The database is the running stack's (from the stack file), or `--database-url`. Changes take
effect at once: OMNI2 checks the database on every connection and every message.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from omni_trace.stack import StackError, StackInfo
from services.omni2.db import Database
from services.omni2.db import repository as repo
from services.omni2.db.engine import redacted_url
from services.omni2.db.seed import seed_demo
from services.omni2.settings import DEFAULT_DATABASE_URL

T = TypeVar("T")


class UsersError(Exception):
    pass


def database_url(args: argparse.Namespace) -> str:
    if args.database_url:
        return str(args.database_url)
    stack_file: Path = args.stack_file
    if stack_file.exists():
        url = StackInfo.read(stack_file).omni2_database_url
        if url:
            return url
    return DEFAULT_DATABASE_URL


def _run(url: str, fn: Callable[[AsyncSession], Awaitable[T]]) -> T:
    async def run() -> T:
        db = Database(url)
        try:
            await db.create_tables()
            await seed_demo(db)
            async with db.session() as session:
                return await fn(session)
        finally:
            await db.dispose()

    try:
        return asyncio.run(run())
    except (repo.NotFound, ValueError) as err:
        raise UsersError(str(err)) from None


def _limit(value: Any, unit: str = "") -> str:
    return "-" if value is None else f"{unit}{value}"


def cmd_list(args: argparse.Namespace) -> int:
    url = database_url(args)
    users = _run(url, repo.list_users)
    print(f"# {redacted_url(url)}")
    header = ("user", "role", "status", "tokens/day", "cost/day", "msgs/min", "tools")
    rows = [header]
    for u in users:
        status = "blocked" if u.blocked else ("active" if u.active else "inactive")
        tools = ",".join(u.mcp_tools) if u.may("tools") else "-"
        rows.append(
            (
                u.user_id,
                u.role,
                status,
                _limit(u.daily_token_limit),
                _limit(u.daily_cost_limit, "$"),
                _limit(u.rate_limit_per_minute),
                tools or "-",
            )
        )
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(header))]
    for row in rows:
        print("  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
    for u in users:
        if u.blocked_reason:
            print(f"{u.user_id} is blocked: {u.blocked_reason}")
    return 0


def cmd_add(args: argparse.Namespace) -> int:
    _run(
        database_url(args),
        lambda s: repo.add_user(s, args.user, args.role, args.name or "", not args.inactive),
    )
    print(f"added {args.user} ({args.role}{', inactive' if args.inactive else ''})")
    return 0


def cmd_block(args: argparse.Namespace) -> int:
    _run(database_url(args), lambda s: repo.block_user(s, args.user, args.reason, by="cli"))
    print(f"blocked {args.user}: {args.reason}")
    return 0


def cmd_unblock(args: argparse.Namespace) -> int:
    was = _run(database_url(args), lambda s: repo.unblock_user(s, args.user))
    print(f"unblocked {args.user}" if was else f"{args.user} was not blocked")
    return 0


def cmd_active(args: argparse.Namespace) -> int:
    active = args.users_command == "activate"
    _run(database_url(args), lambda s: repo.set_active(s, args.user, active))
    print(f"{args.user} is now {'active' if active else 'inactive'}")
    return 0


def _optional(kind: Callable[[str], T]) -> Callable[[str], T | None]:
    """A limit value, or `role` for the role's default."""

    def parse(text: str) -> T | None:
        return None if text == "role" else kind(text)

    return parse


def cmd_limits(args: argparse.Namespace) -> int:
    given = {
        key: getattr(args, key)
        for key in ("daily_tokens", "daily_cost", "rate_per_minute")
        if getattr(args, key) is not repo._UNSET
    }
    if not given:
        raise UsersError("nothing to set: pass --daily-tokens, --daily-cost or --rate-per-minute")
    _run(database_url(args), lambda s: repo.set_limits(s, args.user, **given))
    shown = ", ".join(f"{k}={'role default' if v is None else v}" for k, v in given.items())
    print(f"{args.user}: {shown}")
    return 0


def add_parser(sub: Any, stack_file: Callable[[argparse.ArgumentParser], None]) -> None:
    users = sub.add_parser(
        "users",
        help="list, add, block, unblock users of OMNI2 and set their limits",
        description="Manage OMNI2's users in its database (the running stack's, found via "
        "the stack file, or --database-url). OMNI2 applies changes at the next connection or "
        "message.",
    )
    stack_file(users)
    users.add_argument(
        "--database-url",
        help="SQLAlchemy URL, e.g. sqlite+aiosqlite:///var/omni2.db or "
        "postgresql+asyncpg://user:password@host/db (default: the running stack's)",
    )
    users_sub = users.add_subparsers(dest="users_command", required=True, metavar="ACTION")

    listing = users_sub.add_parser("list", help="every user with role, status and limits")
    listing.set_defaults(func=cmd_list)

    add = users_sub.add_parser("add", help="add a user (its id is the login / JWT subject)")
    add.add_argument("user")
    add.add_argument("--role", default="user", help="admin, user or viewer (default user)")
    add.add_argument("--name", help="display name")
    add.add_argument("--inactive", action="store_true", help="add the account inactive")
    add.set_defaults(func=cmd_add)

    block = users_sub.add_parser("block", help="block a user (connected ones are closed)")
    block.add_argument("user")
    block.add_argument("--reason", required=True, help="shown to the user")
    block.set_defaults(func=cmd_block)

    unblock = users_sub.add_parser("unblock", help="lift a block")
    unblock.add_argument("user")
    unblock.set_defaults(func=cmd_unblock)

    for action, text in (("activate", "activate an account"), ("deactivate", "deactivate it")):
        p = users_sub.add_parser(action, help=text)
        p.add_argument("user")
        p.set_defaults(func=cmd_active)

    limits = users_sub.add_parser(
        "limits", help="set a user's daily token/cost limits and rate limit ('role': default)"
    )
    limits.add_argument("user")
    limits.add_argument("--daily-tokens", type=_optional(int), default=repo._UNSET)
    limits.add_argument("--daily-cost", type=_optional(float), default=repo._UNSET)
    limits.add_argument("--rate-per-minute", type=_optional(int), default=repo._UNSET)
    limits.set_defaults(func=cmd_limits)


__all__ = ["StackError", "UsersError", "add_parser"]
