"""`omni-trace chat`: log in, chat through a running stack as the client layer, and print each
message's trace id."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from omni_trace.commands.common import add_stack_file, password
from omni_trace.stack.client import ChatReply, login, open_chat
from omni_trace.stack.info import StackInfo
from otel.names import Service
from otel.setup import create_tracer_provider


def add_parser(sub: Any) -> None:
    chat = sub.add_parser(
        "chat",
        help="chat through a running stack as the client layer",
        description="Log in, connect through the dashboard (token and "
        "traceparent in the query string, trace context in each frame), "
        "stream each answer and print its trace id.",
    )
    chat.add_argument("text", nargs="+", help="message(s) to send, in order, on one connection")
    chat.add_argument("--user", default="alice", help="user to log in as (default alice)")
    chat.add_argument(
        "--password", help="password (default: the demo user's, or $OMNI_TRACE_PASSWORD)"
    )
    add_stack_file(chat)
    chat.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    info = StackInfo.read(args.stack_file)
    provider = create_tracer_provider(Service.CHAT_CLIENT, otlp_endpoint=info.otlp_http_endpoint)

    async def chat() -> int:
        token = await login(info.dashboard_url, args.user, password(args))
        failures = 0
        async with open_chat(info.dashboard_ws_url, token, tracer_provider=provider) as conn:
            print(f"connected as {args.user}, conversation {conn.conversation_id}", file=sys.stderr)
            for text in args.text:
                print(f"> {text}", file=sys.stderr)
                reply = await conn.send(text, on_token=lambda t: print(t, end="", flush=True))
                print()
                failures += _report(reply, info)
        return 1 if failures else 0

    try:
        code = asyncio.run(chat())
    finally:
        provider.force_flush(3000)
        provider.shutdown()
    return code


def _report(reply: ChatReply, info: StackInfo) -> int:
    """The reply's warnings, error and trace on stderr; 1 when it failed."""
    for frame in reply.frames:
        if frame.get("type") == "warning":
            print(f"warning: {frame.get('warning')}", file=sys.stderr)
    if not reply.ok:
        print(f"error: {reply.error}", file=sys.stderr)
    print(f"trace_id {reply.trace_id}", file=sys.stderr)
    print(f"  {info.jaeger_query_url}/api/traces/{reply.trace_id}", file=sys.stderr)
    return 0 if reply.ok else 1
