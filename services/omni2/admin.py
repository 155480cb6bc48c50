"""OMNI2's admin command: its users, roles, limits and login passwords, in its database.

`python -m services.omni2.admin ACTION ...`; `omni-trace users ACTION ...` runs it with the
running stack's database. The database is `--database-url` (refused when it holds a
password), else `--database-url-file`, else OMNI2_DATABASE_URL, else OMNI2's default. A new
password comes from `--password-stdin`, `--password-file`, OMNI2_USER_PASSWORD or the
terminal's prompt, never from the command line: every user of this machine can read a
process's arguments (/proc/PID/cmdline). Changes take effect at once: OMNI2 checks the
database on every connection and every message, and the dashboard reads the password hash at
every login. `passwd` and `block` also revoke the user's tokens (open connections close).

`load-users` and `store-history` prepare a database for load tests (`omni-trace bench`): users
of a role without limits (with tokens, given OMNI_JWT_SECRET), and a long stored history.

This command never adds demo users: it makes missing tables and the built-in roles (so that
`add --role user` works on a new database), nothing else. Demo users come only from OMNI2's
own seed when it starts (`OMNI2_SEED_DEMO_USERS`).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import sys
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy import insert, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncSession

from services.common.passwords import hash_password, password_problem
from services.common.tokens import issue_token
from services.db import DEFAULT_DATABASE_URL, Database
from services.db.engine import redacted_url
from services.db.models import Message, Role, Usage
from services.db.repository import conversations as conversations_repo
from services.db.repository import users as users_repo
from services.db.seed import seed_roles

T = TypeVar("T")
LOAD_ROLE = "bench"


class AdminSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", hide_input_in_errors=True)

    database_url: SecretStr = Field(
        default=SecretStr(DEFAULT_DATABASE_URL), validation_alias="OMNI2_DATABASE_URL"
    )
    # A new password (`add`, `passwd`) passed in the environment rather than on stdin.
    user_password: SecretStr | None = Field(default=None, validation_alias="OMNI2_USER_PASSWORD")
    # Only `load-users` needs it, to give each user a token.
    jwt_secret: SecretStr | None = Field(default=None, validation_alias="OMNI_JWT_SECRET")
    # How the command is called in its help and messages (omni-trace users sets it).
    prog: str = Field(default="python -m services.omni2.admin", validation_alias="OMNI2_ADMIN_PROG")


class UsersError(Exception):
    pass


ARGV_VISIBLE = "every user of this machine can read a command line (ps, /proc/PID/cmdline)"


def database_url(args: argparse.Namespace) -> str:
    if args.database_url:
        url = str(args.database_url)
        if _has_password(url):
            raise UsersError(
                f"--database-url holds a password, and {ARGV_VISIBLE}: pass the URL in "
                "OMNI2_DATABASE_URL or --database-url-file FILE instead; nothing done"
            )
        return url
    if args.database_url_file:
        return _first_line(args.database_url_file, "--database-url-file")
    return AdminSettings().database_url.get_secret_value()


def _has_password(url: str) -> bool:
    try:
        return make_url(url).password is not None
    except ArgumentError:
        return False  # not a URL at all: refused as such when it is used


def _first_line(path: str, option: str) -> str:
    try:
        with open(path, encoding="utf-8") as file:
            line = file.readline().rstrip("\r\n")
    except OSError as err:
        raise UsersError(f"{option}: cannot read {path} ({err.strerror})") from None
    if not line:
        raise UsersError(f"{option}: {path} is empty")
    return line


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
    except (users_repo.NotFound, ValueError) as err:
        raise UsersError(str(err)) from None


def _limit(value: Any, unit: str = "") -> str:
    return "-" if value is None else f"{unit}{value}"


def cmd_list(args: argparse.Namespace) -> int:
    url = database_url(args)

    async def read(session: AsyncSession) -> tuple[list[users_repo.UserContext], list[str]]:
        return await users_repo.list_users(session), await users_repo.users_without_password(
            session
        )

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
        print(f"{user_id} has no password and cannot log in: {args.prog} passwd {user_id}")
    return 0


def _read_password(args: argparse.Namespace, *, required: bool) -> str | None:
    """The new password from --password-stdin, --password-file, OMNI2_USER_PASSWORD or a
    prompt; checked, not echoed."""
    from_env = AdminSettings().user_password
    if args.password is not None:
        raise UsersError(
            f"--password is not accepted: {ARGV_VISIBLE}; pass --password-stdin (the password "
            "on stdin), --password-file FILE or OMNI2_USER_PASSWORD; nothing changed"
        )
    if args.password_stdin:
        # One line: `printf '%s\n' "$PW" | omni-trace users passwd dave --password-stdin`.
        password = sys.stdin.readline().rstrip("\r\n")
    elif args.password_file:
        password = _first_line(args.password_file, "--password-file")
    elif from_env is not None:
        password = from_env.get_secret_value()
    elif not required:
        return None
    elif sys.stdin.isatty():
        password = getpass.getpass(f"new password for {args.user}: ")
        if getpass.getpass("again: ") != password:
            raise UsersError("the two passwords differ; nothing changed")
    else:
        raise UsersError(
            "no password given: pass --password-stdin (and the password on stdin), "
            "--password-file FILE or OMNI2_USER_PASSWORD, or run in a terminal to be asked"
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
        lambda s: users_repo.add_user(
            s, args.user, args.role, args.name or "", not args.inactive, password_hash=hashed
        ),
    )
    print(f"added {args.user} ({args.role}{', inactive' if args.inactive else ''})")
    if hashed is None:
        print(
            f"{args.user} has no password and cannot log in yet: {args.prog} passwd {args.user}",
            file=sys.stderr,
        )
    return 0


def cmd_passwd(args: argparse.Namespace) -> int:
    if args.remove:
        _run(database_url(args), lambda s: users_repo.set_password_hash(s, args.user, None))
        print(f"{args.user} has no password now and cannot log in")
        return 0
    password = _read_password(args, required=True)
    assert password is not None
    hashed = hash_password(password)
    _run(database_url(args), lambda s: users_repo.set_password_hash(s, args.user, hashed))
    print(f"password of {args.user} set")
    return 0


async def _block(session: AsyncSession, user: str, reason: str) -> None:
    await users_repo.block_user(session, user, reason, by="cli")
    # Its tokens go too: an unblock later must not bring back the sessions the block ended.
    await users_repo.bump_token_generation(session, user)


def cmd_block(args: argparse.Namespace) -> int:
    _run(database_url(args), lambda s: _block(s, args.user, args.reason))
    print(f"blocked {args.user}: {args.reason}")
    return 0


def cmd_unblock(args: argparse.Namespace) -> int:
    was = _run(database_url(args), lambda s: users_repo.unblock_user(s, args.user))
    print(f"unblocked {args.user}" if was else f"{args.user} was not blocked")
    return 0


def cmd_active(args: argparse.Namespace) -> int:
    active = args.users_command == "activate"
    _run(database_url(args), lambda s: users_repo.set_active(s, args.user, active))
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
        if getattr(args, key) is not users_repo._UNSET
    }
    if not given:
        raise UsersError(
            "nothing to set: pass --daily-tokens, --daily-cost, --rate-per-minute "
            "or --max-connections"
        )
    _run(database_url(args), lambda s: users_repo.set_limits(s, args.user, **given))
    shown = ", ".join(f"{k}={'role default' if v is None else v}" for k, v in given.items())
    print(f"{args.user}: {shown}")
    return 0


def password_options(p: argparse.ArgumentParser) -> Any:
    """--password-stdin and --password-file (one of them); returns their group. --password
    is parsed only to be refused with a reason (argparse would say "unrecognized")."""
    given = p.add_mutually_exclusive_group()
    given.add_argument("--password", help=argparse.SUPPRESS)
    given.add_argument(
        "--password-stdin", action="store_true", help="read the password from stdin (one line)"
    )
    given.add_argument(
        "--password-file",
        metavar="FILE",
        help="read the password from the first line of FILE (or set OMNI2_USER_PASSWORD)",
    )
    return given


async def _load_users(url: str, count: int) -> list[str]:
    db = Database(url)
    try:
        await db.create_tables()
        async with db.session() as session:
            if await session.scalar(select(Role).where(Role.name == LOAD_ROLE)) is None:
                session.add(
                    Role(
                        name=LOAD_ROLE,
                        description="load tests (omni-trace bench): no limits",
                        permissions=["chat", "tools"],
                        mcp_tools=["*"],
                    )
                )
                await session.flush()
            ids = [f"bench-{uuid.uuid4().hex[:10]}" for _ in range(count)]
            for user_id in ids:
                await users_repo.add_user(session, user_id, LOAD_ROLE)
        return ids
    finally:
        await db.dispose()


def cmd_load_users(args: argparse.Namespace) -> int:
    """JSON on stdout: the users, each with a token when OMNI_JWT_SECRET is set."""
    secret = AdminSettings().jwt_secret
    ids = asyncio.run(_load_users(database_url(args), args.count))
    users = [
        {"id": user_id, "token": issue_token(user_id, secret.get_secret_value(), args.ttl)}
        if secret
        else {"id": user_id}
        for user_id in ids
    ]
    print(json.dumps({"role": LOAD_ROLE, "users": users}))
    return 0


async def _store_history(url: str, user_id: str, rows: int) -> None:
    db = Database(url)
    conversation = f"bench-history-{uuid.uuid4().hex[:8]}"
    try:
        async with db.session() as session:
            await conversations_repo.create_conversation(session, conversation, user_id, "0" * 32)
        for start in range(0, rows, 10_000):
            count = min(10_000, rows - start)
            ids = {"conversation_id": conversation, "user_id": user_id, "trace_id": "0" * 32}
            async with db.session() as session:
                await session.execute(
                    insert(Message),
                    [
                        ids | {"role": "user" if i % 2 == 0 else "assistant", "content": "x"}
                        for i in range(count)
                    ],
                )
                await session.execute(
                    insert(Usage),
                    [
                        ids | {"provider": "offline", "model": "m", "tokens_input": 1}
                        for _ in range(count // 2)
                    ],
                )
    finally:
        await db.dispose()


def cmd_store_history(args: argparse.Namespace) -> int:
    asyncio.run(_store_history(database_url(args), args.user, args.rows))
    print(f"stored {args.rows} earlier messages of {args.user}")
    return 0


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    users = argparse.ArgumentParser(
        prog=prog or AdminSettings().prog,
        description="Manage OMNI2's users in its database (--database-url, else "
        "--database-url-file, else OMNI2_DATABASE_URL; omni-trace users: the running "
        "stack's). OMNI2 applies changes at the next connection or message; passwd and block "
        "revoke the user's tokens, closing their open connections.",
    )
    users.add_argument(
        "--database-url",
        help="SQLAlchemy URL without a password, e.g. sqlite+aiosqlite:///var/omni2.db (one "
        "with a password is refused: the process list shows it; use OMNI2_DATABASE_URL or "
        "--database-url-file)",
    )
    users.add_argument(
        "--database-url-file",
        metavar="FILE",
        help="read the SQLAlchemy URL (it may hold a password) from the first line of FILE",
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
    limits.add_argument("--daily-tokens", type=_optional(int), default=users_repo._UNSET)
    limits.add_argument("--daily-cost", type=_optional(float), default=users_repo._UNSET)
    limits.add_argument("--rate-per-minute", type=_optional(int), default=users_repo._UNSET)
    limits.add_argument(
        "--max-connections",
        type=_optional(int),
        default=users_repo._UNSET,
        help="open chat connections allowed at once (4429 beyond)",
    )
    limits.set_defaults(func=cmd_limits)

    load = users_sub.add_parser(
        "load-users",
        help="add users of a role without limits, for load tests (JSON on stdout)",
        description="Add COUNT users of the role `bench` (no limits; made if missing) and "
        "print them as JSON, each with a token if OMNI_JWT_SECRET is set.",
    )
    load.add_argument("count", type=int)
    load.add_argument("--ttl", type=int, default=3600, help="tokens' lifetime in s (3600)")
    load.set_defaults(func=cmd_load_users)

    history = users_sub.add_parser(
        "store-history", help="store ROWS earlier messages (and their usage) of a user"
    )
    history.add_argument("user")
    history.add_argument("rows", type=int)
    history.set_defaults(func=cmd_store_history)
    return users


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.prog = parser.prog
    try:
        return int(args.func(args))
    except UsersError as err:
        print(f"{parser.prog}: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
