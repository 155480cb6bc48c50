"""A stack test written only with the pytest plugin's public API (fixtures + assertions)."""

from __future__ import annotations

import pytest

from omni_trace.stack.plugin import ChatFactory
from omni_trace.traces import TraceFetcher
from omni_trace.traces.assertions import assert_message_chain

pytestmark = pytest.mark.stack


async def test_every_message_chain_is_whole(
    omni_chat: ChatFactory, omni_traces: TraceFetcher
) -> None:
    async with omni_chat("bob") as chat:
        replies = [await chat.send("plugin check one"), await chat.send("plugin check two")]
        conversation = chat.conversation_id

    for reply in replies:
        assert reply.ok, reply.frame
        message, session = omni_traces.message(reply)
        assert_message_chain(message, session)
        message.assert_chain(
            "chat-client:chat.message[kind=CLIENT] > dashboard-backend:chat.relay"
            " > omni2:chat.turn[user.id=bob] > omni2:chat *"
        )
        message.assert_everywhere("gen_ai.conversation.id", conversation)
        message.assert_no_orphans()
        message.assert_no_errors()
        message.assert_attribute(
            "omni2:chat *", "gen_ai.usage.output_tokens", check=lambda tokens: tokens > 0
        )
        message.assert_linked("omni2:chat.turn", session, "traefik:ReverseProxy")
        message.assert_linked(
            "dashboard-backend:chat.relay", session, "dashboard-backend:upstream connect"
        )
        session.assert_chain(
            "dashboard-backend:upstream connect >> traefik:AuthRequest > omni2-auth:GET /verify"
        )
        session.assert_chain("traefik:ReverseProxy > omni2:chat.connect[user.id=bob]")
