"""Every service name, span name and custom attribute the project emits, in one place.

Tests and the docs read these tables; code never spells a name inline.
"""

from __future__ import annotations

from typing import Final


class Service:
    """`service.name` of each layer."""

    CHAT_CLIENT: Final = "chat-client"  # the CLI / test chat client (layer 1)
    CHAT_BROWSER: Final = "chat-browser"  # the browser page (layer 1)
    DASHBOARD: Final = "dashboard-backend"  # the WebSocket proxy (layer 2)
    TRAEFIK: Final = "traefik"  # the gateway (layer 3)
    AUTH: Final = "omni2-auth"  # Traefik's ForwardAuth target
    OMNI2: Final = "omni2"  # the chat backend (layer 4)
    MCP_TOOLS: Final = "mcp-tools"  # the MCP tool server


class SpanName:
    """Span names of the session trace and the message trace (DESIGN.md section 3)."""

    CONNECT: Final = "chat.connect"  # one WebSocket connection being set up, at each layer
    UPSTREAM_CONNECT: Final = "upstream connect"  # dashboard's handshake with Traefik
    MESSAGE: Final = "chat.message"  # client: one chat message, send .. done/error
    RELAY: Final = "chat.relay"  # dashboard: one message relayed, receive .. done/error
    TURN: Final = "chat.turn"  # omni2: one message answered
    AUTH_VERIFY: Final = "GET /verify"  # auth service: FastAPI's server span for ForwardAuth

    @staticmethod
    def model_call(model: str) -> str:
        """GenAI convention: `chat <model>`."""
        return f"chat {model}"


class Attr:
    """Attribute keys. Standard semantic-convention keys first, then our own (`chat.*`)."""

    # OpenTelemetry semantic conventions
    CONVERSATION_ID: Final = "gen_ai.conversation.id"  # on every span of a message trace
    USER_ID: Final = "user.id"  # verified identity only, never client-supplied
    GEN_AI_OPERATION: Final = "gen_ai.operation.name"  # "chat"
    GEN_AI_PROVIDER: Final = "gen_ai.provider.name"  # model provider, e.g. "offline"
    GEN_AI_REQUEST_MODEL: Final = "gen_ai.request.model"  # model asked for
    GEN_AI_RESPONSE_MODEL: Final = "gen_ai.response.model"  # model that answered
    GEN_AI_INPUT_TOKENS: Final = "gen_ai.usage.input_tokens"  # prompt tokens
    GEN_AI_OUTPUT_TOKENS: Final = "gen_ai.usage.output_tokens"  # completion tokens
    GEN_AI_FINISH_REASONS: Final = "gen_ai.response.finish_reasons"  # e.g. ["stop"]
    ERROR_TYPE: Final = "error.type"  # short machine-readable failure class
    SERVER_ADDRESS: Final = "server.address"  # peer host of a client span
    SERVER_PORT: Final = "server.port"  # peer port of a client span
    URL_FULL: Final = "url.full"  # redacted URL of a client span

    # Project attributes
    CLOSE_CODE: Final = "chat.close.code"  # WebSocket close code sent or received
    CLOSE_REASON: Final = "chat.close.reason"  # WebSocket close reason sent or received
    FRAME_TYPE: Final = "chat.frame.type"  # type of the frame that ended a span
    MESSAGE_CHARS: Final = "chat.message.chars"  # length of the user's text (content is off)
    REPLY_CHARS: Final = "chat.reply.chars"  # length of the streamed reply
    TOKEN_FRAMES: Final = "chat.token_frames"  # token frames streamed for one message
    TIME_TO_FIRST_TOKEN: Final = "chat.time_to_first_token_ms"  # first token frame after send
    TIME_TO_FIRST_CHUNK: Final = "gen_ai.response.time_to_first_chunk"  # model's first chunk, s
    AUTH_RESULT: Final = "auth.result"  # "allowed" or "denied"
    AUTH_FAILURE: Final = "auth.failure_reason"  # why a token was refused
    LINK_ROLE: Final = "chat.link.role"  # on a span link: what the linked span is


class LinkRole:
    """Values of `chat.link.role` on span links from a message trace to its session trace."""

    UPSTREAM_CONNECT: Final = "upstream-connect"  # dashboard relay -> its upstream connect span
    GATEWAY: Final = "gateway"  # omni2 turn -> the Traefik span it was reached through


class Event:
    """Span event names."""

    FIRST_TOKEN: Final = "first_token"  # first token frame seen by this layer
