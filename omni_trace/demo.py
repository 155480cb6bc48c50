"""`omni-trace demo`: chat through the stack, then show each message's trace from Jaeger."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence

from omni_trace.client import ChatReply, login, open_chat
from omni_trace.jaeger import JaegerClient, TraceSpan, TraceTimeout, has_services
from omni_trace.stack import StackInfo
from omni_trace.tracetree import render_tree
from otel.names import Service, SpanName
from otel.setup import create_tracer_provider
from services.omni2.db.seed import DEMO_PASSWORDS

DEFAULT_MESSAGES = (
    "Hello, what can you do?",
    "How many products per category are in the database?",  # a tool call through MCP
    "Thanks, that is all.",
)
SESSION_SERVICES = (
    Service.CHAT_CLIENT,
    Service.DASHBOARD,
    Service.TRAEFIK,
    Service.AUTH,
    Service.OMNI2,
)


def message_trace_complete(spans: list[TraceSpan]) -> bool:
    names = {s.name for s in spans}
    return {SpanName.MESSAGE, SpanName.RELAY, SpanName.TURN} <= names


def hop_summary(spans: list[TraceSpan]) -> str:
    """Time spent at each layer of one message, outermost first."""
    by_name = {s.name: s for s in spans}
    parts = []
    for label, name in (
        ("client", SpanName.MESSAGE),
        ("dashboard", SpanName.RELAY),
        ("omni2", SpanName.TURN),
    ):
        if name in by_name:
            parts.append(f"{label} {by_name[name].duration_ms:.1f} ms")
    model = [s for s in spans if s.name.startswith("chat ") and s.service == Service.OMNI2]
    if model:
        parts.append(f"model {sum(m.duration_ms for m in model):.1f} ms")
    tools = [s for s in spans if s.name.startswith("execute_tool ")]
    if tools:
        parts.append(f"tools {sum(t.duration_ms for t in tools):.1f} ms")
    client = by_name.get(SpanName.MESSAGE)
    ttft = client.attributes.get("chat.time_to_first_token_ms") if client else None
    if isinstance(ttft, int | float):
        parts.append(f"first token at client {ttft:.1f} ms")
    return " | ".join(parts)


async def _chat(
    info: StackInfo, user: str, messages: Sequence[str], provider: object
) -> tuple[list[ChatReply], str]:
    token = await login(info.dashboard_url, user, DEMO_PASSWORDS.get(user, ""))
    replies = []
    async with open_chat(info.dashboard_ws_url, token, tracer_provider=provider) as chat:  # type: ignore[arg-type]
        print(f"\nconnected as {user}; conversation {chat.conversation_id}")
        for text in messages:
            print(f"\n> {text}\n< ", end="", flush=True)
            reply = await chat.send(text, on_token=lambda t: print(t, end="", flush=True))
            print(f"\n  [{reply.frame.get('type')}] trace_id {reply.trace_id}")
            replies.append(reply)
    return replies, chat.session_trace_id


def run_demo(
    info: StackInfo, *, user: str = "alice", messages: Sequence[str] | None = None
) -> None:
    provider = create_tracer_provider(Service.CHAT_CLIENT, otlp_endpoint=info.otlp_http_endpoint)
    try:
        replies, session_id = asyncio.run(_chat(info, user, messages or DEFAULT_MESSAGES, provider))
    finally:
        provider.force_flush(3000)
    print("\nTraces from Jaeger (" + info.jaeger_query_url + "):")
    with JaegerClient(info.jaeger_query_url) as jaeger:
        for reply in replies:
            try:
                spans = jaeger.wait_for_trace(
                    reply.trace_id, message_trace_complete, what="the message chain", timeout=15
                )
            except TraceTimeout as err:
                print(f"\n{err}\n{render_tree(err.spans)}", file=sys.stderr)
                continue
            print(f"\nmessage {reply.trace_id}: {hop_summary(spans)}")
            print(render_tree(spans))
        # Traefik's entry span ends with the connection, so the session trace is whole now.
        try:
            session = jaeger.wait_for_trace(
                session_id, has_services(*SESSION_SERVICES), what="every layer", timeout=15
            )
            print(f"\nsession (connection) trace {session_id}:")
            print(render_tree(session, show_links=False))
        except TraceTimeout as err:
            print(f"\n{err}\n{render_tree(err.spans)}", file=sys.stderr)
    print(f"\nFetch any trace: {info.jaeger_query_url}/api/traces/<trace_id>")
