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

    HISTORY: Final = "chat.history"  # omni2: the conversation's earlier turns read from the DB
    PERSIST: Final = "chat.persist"  # omni2: one message's rows written (messages, usage, flow)
    MCP_LIST_TOOLS: Final = "tools/list"  # MCP: the tool catalogue (client and server spans)

    @staticmethod
    def model_call(model: str) -> str:
        """GenAI convention: `chat <model>`."""
        return f"chat {model}"

    @staticmethod
    def check(name: str) -> str:
        """omni2: one check of a connection or message, e.g. `check rate_limit`."""
        return f"check {name}"

    @staticmethod
    def execute_tool(tool: str) -> str:
        """GenAI convention: `execute_tool <name>`, one tool call of the agent loop."""
        return f"execute_tool {tool}"

    @staticmethod
    def mcp(method: str, target: str | None = None) -> str:
        """MCP convention: `<mcp.method.name> <target>`, e.g. `tools/call database_query`."""
        return f"{method} {target}" if target else method


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
    GEN_AI_TOOL_NAME: Final = "gen_ai.tool.name"  # tool the model asked for
    GEN_AI_TOOL_CALL_ID: Final = "gen_ai.tool.call.id"  # the model's id of that call
    GEN_AI_TOOL_TYPE: Final = "gen_ai.tool.type"  # "extension" for MCP tools
    GEN_AI_RESPONSE_ID: Final = "gen_ai.response.id"  # provider's id of the response
    MCP_METHOD: Final = "mcp.method.name"  # MCP JSON-RPC method, e.g. "tools/call"
    DB_SYSTEM: Final = "db.system.name"  # "sqlite" or "postgresql"
    DB_OPERATION: Final = "db.operation.name"  # what a database span did, e.g. "insert"

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
    USER_ROLE: Final = "chat.user.role"  # omni2: the user's role from its database
    CHECK_NAME: Final = "chat.check.name"  # which check a `check <name>` span ran
    CHECK_RESULT: Final = "chat.check.result"  # "pass" or "deny"
    LIMIT: Final = "chat.limit"  # the limit a check compared against
    LIMIT_USED: Final = "chat.limit.used"  # how much of it was used before this message
    HISTORY_MESSAGES: Final = "chat.history.messages"  # earlier messages given to the model
    AGENT_ITERATIONS: Final = "chat.agent.iterations"  # model calls in one turn
    AGENT_MAX_ITERATIONS: Final = "chat.agent.max_iterations"  # the loop's cap
    TOOL_CALLS: Final = "chat.tool_calls"  # tool calls in one turn
    TOOL_STATUS: Final = "chat.tool.status"  # "ok" or "error" (the tool's real outcome)
    USAGE_COST: Final = "chat.usage.cost"  # cost of one message (USD, from model prices)
    FLOW_EVENTS: Final = "chat.flow_events"  # flow events stored for one message
    ROWS: Final = "chat.db.rows"  # rows a database span wrote or a tool returned


class LinkRole:
    """Values of `chat.link.role` on span links from a message trace to its session trace."""

    UPSTREAM_CONNECT: Final = "upstream-connect"  # dashboard relay -> its upstream connect span
    GATEWAY: Final = "gateway"  # omni2 turn -> the Traefik span it was reached through


class McpMeta:
    """Keys OMNI2 puts in an MCP request's `params._meta` beside `traceparent`/`tracestate`."""

    CONVERSATION_ID: Final = "omni2/conversation_id"  # becomes gen_ai.conversation.id there
    USER_ID: Final = "omni2/user_id"  # becomes user.id there (verified by OMNI2)


class Flow:
    """`kind` of the flow events stored per message (the audit trail)."""

    CONNECT: Final = "connect"  # a connection accepted or refused
    CHECK: Final = "check"  # one check (user, rate_limit, usage)
    MODEL_CALL: Final = "model_call"  # one call of the model
    TOOL_CALL: Final = "tool_call"  # one tool call, with its real status and duration
    ERROR: Final = "error"  # the message failed


class Event:
    """Span event names."""

    FIRST_TOKEN: Final = "first_token"  # first token frame seen by this layer
