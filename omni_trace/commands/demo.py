"""`omni-trace demo`: `up`, then a short scripted chat whose traces it prints."""

from __future__ import annotations

import argparse
from typing import Any

from omni_trace.commands.up import add_starter_options, serve_stack
from omni_trace.stack import demo as demo_mod
from omni_trace.stack.info import StackInfo


def add_parser(sub: Any) -> None:
    demo = sub.add_parser(
        "demo",
        help="start the stack, chat, and show each message's trace",
        description="Bring the stack up, send a few messages, print each "
        "message's trace (services, spans, durations) and the session trace.",
    )
    add_starter_options(demo)
    demo.add_argument("--once", action="store_true", help="stop the stack after the demo")
    demo.add_argument("--user", default="alice", help="demo user (default alice)")
    demo.add_argument(
        "--message",
        action="append",
        help="a message to send (repeatable; default: a short scripted chat)",
    )
    demo.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    def demo(info: StackInfo) -> bool:
        demo_mod.run_demo(info, user=args.user, messages=args.message or None)
        return not args.once

    return serve_stack(args, demo)
