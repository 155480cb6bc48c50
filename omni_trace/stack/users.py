"""`omni-trace users ...`: OMNI2's users, roles, limits and login passwords, in its database.

The database is the running stack's (from the stack file), or `--database-url`. Changes take
effect at once: OMNI2 checks the database on every connection and every message, and the
dashboard reads the password hash at every login.

This command never adds demo users: it makes missing tables and the built-in roles (so that
`add --role user` works on a new database), nothing else. Demo users come only from OMNI2's
own seed when it starts (`OMNI2_SEED_DEMO_USERS`).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from omni_trace.stack.runner import StackError, StackInfo
from services.common.passwords import hash_password, password_problem
from services.omni2.db import Database
from services.omni2.db import repository as repo
from services.omni2.db.engine import redacted_url
from services.omni2.db.seed import seed_roles
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
            await seed_roles(db)
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

    async def read(session: AsyncSession) -> tuple[list[repo.UserContext], list[str]]:
        return await repo.list_users(session), await repo.users_without_password(session)

    users, no_password = _run(url, read)
    print(f"# {redacted_url(url)}")
    header = ("user", "role", "status", "tokens/day", "cost/day", "msgs/min", "conns", "tools")
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
                "default" if u.max_connections is None else str(u.max_connections),
                tools or "-",
            )
        )
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(header))]
    for row in rows:
        print("  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
    for u in users:
        if u.blocked_reason:
            print(f"{u.user_id} is blocked: {u.blocked_reason}")
    for user_id in no_password:
        print(f"{user_id} has no password and cannot log in: omni-trace users passwd {user_id}")
    return 0


def _read_password(args: argparse.Namespace, *, required: bool) -> str | None:
    """The new password from --password, --password-stdin or a prompt; checked, not echoed."""
    if args.password is not None:
        password = str(args.password)
    elif args.password_stdin:
        # One line: `printf '%s\n' "$PW" | omni-trace users passwd dave --password-stdin`.
        password = sys.stdin.readline().rstrip("\r\n")
    elif not required:
        return None
    elif sys.stdin.isatty():
        password = getpass.getpass(f"new password for {args.user}: ")
        if getpass.getpass("again: ") != password:
            raise UsersError("the two passwords differ; nothing changed")
    else:
        raise UsersError(
            "no password given: pass --password-stdin (and the password on stdin), or run "
            "in a terminal to be asked"
        )
    problem = password_problem(password)
    if problem:
        raise UsersError(f"{problem}; nothing changed")
    return password


def cmd_add(args: argparse.Namespace) -> int:
    password = _read_password(args, required=False)
    hashed = hash_password(password) if password is not None else None
    _run(
        database_url(args),
        lambda s: repo.add_user(
            s, args.user, args.role, args.name or "", not args.inactive, password_hash=hashed
        ),
    )
    print(f"added {args.user} ({args.role}{', inactive' if args.inactive else ''})")
    if hashed is None:
        print(
            f"{args.user} has no password and cannot log in yet: "
            f"omni-trace users passwd {args.user}",
            file=sys.stderr,
        )
    return 0


def cmd_passwd(args: argparse.Namespace) -> int:
    if args.remove:
        _run(database_url(args), lambda s: repo.set_password_hash(s, args.user, None))
        print(f"{args.user} has no password now and cannot log in")
        return 0
    password = _read_password(args, required=True)
    assert password is not None
    hashed = hash_password(password)
    _run(database_url(args), lambda s: repo.set_password_hash(s, args.user, hashed))
    print(f"password of {args.user} set")
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
        for key in ("daily_tokens", "daily_cost", "rate_per_minute", "max_connections")
        if getattr(args, key) is not repo._UNSET
    }
    if not given:
        raise UsersError(
            "nothing to set: pass --daily-tokens, --daily-cost, --rate-per-minute "
            "or --max-connections"
        )
    _run(database_url(args), lambda s: repo.set_limits(s, args.user, **given))
    shown = ", ".join(f"{k}={'role default' if v is None else v}" for k, v in given.items())
    print(f"{args.user}: {shown}")
    return 0


def password_options(p: argparse.ArgumentParser) -> Any:
    """--password and --password-stdin (one of them); returns their group."""
    given = p.add_mutually_exclusive_group()
    given.add_argument(
        "--password",
        help="the login password (visible to other users of this machine in the process "
        "list: prefer --password-stdin or the prompt of `passwd`)",
    )
    given.add_argument(
        "--password-stdin", action="store_true", help="read the password from stdin (one line)"
    )
    return given


def add_parser(sub: Any, stack_file: Callable[[argparse.ArgumentParser], None]) -> None:
    users = sub.add_parser(
        "users",
        help="list, add, block, unblock users of OMNI2, set their passwords and limits",
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
    password_options(add)
    add.set_defaults(func=cmd_add)

    passwd = users_sub.add_parser(
        "passwd",
        help="set or reset a user's login password (asked for, or --password-stdin)",
        description="Set the password the user logs in with at the dashboard (stored as an "
        "Argon2id hash). Without options it is asked for twice in the terminal.",
    )
    passwd.add_argument("user")
    password_options(passwd).add_argument(
        "--remove", action="store_true", help="remove the password: the user cannot log in"
    )
    passwd.set_defaults(func=cmd_passwd)

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
        "limits",
        help="set a user's daily token/cost limits, rate limit and connections ('role': default)",
    )
    limits.add_argument("user")
    limits.add_argument("--daily-tokens", type=_optional(int), default=repo._UNSET)
    limits.add_argument("--daily-cost", type=_optional(float), default=repo._UNSET)
    limits.add_argument("--rate-per-minute", type=_optional(int), default=repo._UNSET)
    limits.add_argument(
        "--max-connections",
        type=_optional(int),
        default=repo._UNSET,
        help="open chat connections allowed at once (4429 beyond)",
    )
    limits.set_defaults(func=cmd_limits)


__all__ = ["StackError", "UsersError", "add_parser"]
