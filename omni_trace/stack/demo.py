"""`omni-trace demo`: chat through the stack, then show each message's trace from Jaeger."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence

from omni_trace.stack.client import ChatReply, login, open_chat
from omni_trace.stack.runner import StackInfo
from omni_trace.traces.chain import ChainReport, wait_for_chain
from omni_trace.traces.jaeger import JaegerClient, TraceSpan, TraceTimeout, has_services
from omni_trace.traces.spec import default_spec
from omni_trace.traces.tracetree import render_tree
from otel.names import Service
from otel.setup import create_tracer_provider

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
    """Every message layer's span is in (the default spec's)."""
    names = {(s.service, s.name) for s in spans}
    return all(
        any((service, layer.message) in names for service in layer.services)
        for layer in default_spec().message_layers
    )


def hop_summary(report: ChainReport) -> str:
    """The audit's numbers for one message: its chain, each hop, where the first token was
    seen, time in the model and tools, the whole wait."""
    hops = report.hops

    def ms(key: str) -> str:
        value = hops.get(key)
        return "-" if value is None else f"{value:.1f}"

    parts = ["chain " + ("whole" if not report.broken else report.status)]
    parts += [f"{h.replace('_to_', ' > ')} {ms(h)} ms" for h in hops if "_to_" in h]
    ttft = [h for h in hops if h.startswith("ttft_")]
    firsts = " / ".join(f"{h.removeprefix('ttft_')} {ms(h)}" for h in ttft)
    parts.append(f"first token at {firsts} ms")
    parts += [f"{key} {ms(key)} ms" for key in ("model", "tools", "total") if hops.get(key)]
    return " | ".join(parts)


async def _chat(
    info: StackInfo, user: str, messages: Sequence[str], provider: object
) -> tuple[list[ChatReply], str]:
    token = await login(info.dashboard_url, user, info.demo_passwords.get(user, ""))
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
            # Until the chain is whole (Traefik sends its spans in batches), or as it stands.
            report = wait_for_chain(jaeger, reply.trace_id, timeout=15)
            print(f"\nmessage {reply.trace_id}: {hop_summary(report)}")
            print(render_tree(jaeger.get_trace(reply.trace_id)))
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
