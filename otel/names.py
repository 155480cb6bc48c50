"""Every service name, span name and attribute the project emits: the one documented table.

Each constant is registered with a description, so `SPANS` and `ATTRIBUTES` are the table
(rendered into docs/telemetry.md by `omni-trace names --markdown`); a stack test checks that
our services emit nothing outside it.
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Final


@dataclass(frozen=True)
class SpanDoc:
    name: str  # exact name, or an fnmatch pattern such as "chat *"
    services: tuple[str, ...]
    kind: str
    description: str


@dataclass(frozen=True)
class AttrDoc:
    key: str
    description: str
    source: (
        str  # "project", "semconv" (set by our code); "fastapi", "sqlalchemy", "mcp-sdk": theirs
    )


@dataclass(frozen=True)
class MetricDoc:
    name: str
    instrument: str  # "histogram" or "counter"
    unit: str
    attributes: tuple[str, ...]  # every attribute it may carry (conditional ones included)
    description: str
    follows: str = "ours"  # the convention (and its version) it follows, or "ours"


SPANS: dict[str, SpanDoc] = {}
ATTRIBUTES: dict[str, AttrDoc] = {}
METRICS: dict[str, MetricDoc] = {}


def _span(name: str, services: tuple[str, ...], kind: str, description: str) -> str:
    SPANS[name] = SpanDoc(name, services, kind, description)
    return name


def _attr(key: str, description: str, source: str = "project") -> str:
    ATTRIBUTES[key] = AttrDoc(key, description, source)
    return key


class Service:
    """`service.name` of each layer."""

    CHAT_CLIENT: Final = "chat-client"  # the CLI / test chat client (layer 1)
    CHAT_BROWSER: Final = "chat-browser"  # the browser page (layer 1)
    DASHBOARD: Final = "dashboard-backend"  # the WebSocket proxy (layer 2)
    TRAEFIK: Final = "traefik"  # the gateway (layer 3)
    AUTH: Final = "omni2-auth"  # Traefik's ForwardAuth target
    OMNI2: Final = "omni2"  # the chat backend (layer 4)
    MCP_TOOLS: Final = "mcp-tools"  # the MCP tool server
    FRONTEND: Final = "chat-frontend"  # serves the chat page and its /config.json


CLIENTS = (Service.CHAT_CLIENT, Service.CHAT_BROWSER)
# Services whose spans our code emits (Traefik's spans are Traefik's own).
OWN_SERVICES = (
    *CLIENTS,
    Service.DASHBOARD,
    Service.AUTH,
    Service.OMNI2,
    Service.MCP_TOOLS,
    Service.FRONTEND,
)


class SpanName:
    """Span names of the session trace and the message trace (README.md, "The trace model")."""

    CONNECT: Final = _span(
        "chat.connect",
        (*CLIENTS, Service.DASHBOARD, Service.OMNI2),
        "CLIENT at the client, SERVER elsewhere",
        "one WebSocket connection being set up at this layer (session trace)",
    )
    UPSTREAM_CONNECT: Final = _span(
        "upstream connect",
        (Service.DASHBOARD,),
        "CLIENT",
        "the dashboard's WebSocket handshake with Traefik; message relays link to it",
    )
    MESSAGE: Final = _span(
        "chat.message",
        CLIENTS,
        "CLIENT",
        "one chat message, from send to its done/error frame: the message trace's root",
    )
    RELAY: Final = _span(
        "chat.relay",
        (Service.DASHBOARD,),
        "SERVER",
        "one message relayed by the dashboard, receive to done/error; links to upstream connect",
    )
    TURN: Final = _span(
        "chat.turn",
        (Service.OMNI2,),
        "SERVER",
        "one message answered (or refused) by OMNI2; links to Traefik's ReverseProxy span",
    )
    MODEL_CALL: Final = _span(
        "chat *",
        (Service.OMNI2,),
        "CLIENT",
        "GenAI convention `chat <model>`: one streamed model call",
    )
    AUTH_VERIFY: Final = _span(
        "GET /verify",
        (Service.AUTH,),
        "SERVER",
        "the ForwardAuth check (opentelemetry-instrumentation-fastapi's server span)",
    )
    USAGE_WEBHOOK: Final = _span(
        "POST usage webhook",
        (Service.OMNI2,),
        "CLIENT",
        "an answered message's usage sent to OMNI2_USAGE_WEBHOOK_URL, after the reply; the "
        "receiving service's span is its child (examples/usage_ledger, on jaeger-client)",
    )
    PERSIST: Final = _span(
        "chat.persist",
        (Service.OMNI2,),
        "CLIENT",
        "one message's rows written (messages, usage, flow events)",
    )
    REJECT: Final = _span(
        "chat.reject",
        (Service.OMNI2,),
        "SERVER",
        "a client frame refused before it became a message and without trace context of its "
        "own (malformed JSON, binary, unknown type): in the session trace, below chat.connect",
    )
    CLOSE: Final = _span(
        "chat.close",
        (Service.DASHBOARD, Service.OMNI2),
        "INTERNAL",
        "an open connection closed with an error code, in the session trace: by OMNI2 on its "
        "own (its token expired or was revoked), or at the dashboard (OMNI2's close relayed, "
        "a frame flood)",
    )
    CHECKS: Final = _span(
        "checks",
        (Service.OMNI2,),
        "INTERNAL",
        "the checks of one connection (user, connections) or message (user, rate_limit, "
        "usage): each an event `check <name>` with its result and attributes; the span has "
        "the run's result and, when one denied or failed, that check's name and error",
    )
    EXECUTE_TOOL: Final = _span(
        "execute_tool *",
        (Service.OMNI2,),
        "INTERNAL",
        "GenAI convention `execute_tool <name>`: one tool call of the agent loop",
    )
    MCP_LIST_TOOLS: Final = _span(
        "tools/list",
        (Service.OMNI2, Service.MCP_TOOLS),
        "CLIENT at omni2, SERVER at mcp-tools",
        "MCP: the tool catalogue",
    )
    MCP_CALL: Final = _span(
        "tools/call *",
        (Service.OMNI2, Service.MCP_TOOLS),
        "CLIENT at omni2, SERVER at mcp-tools",
        "MCP convention `<mcp.method.name> <tool>`: one tool call over MCP",
    )
    MCP_DISCOVER: Final = _span(
        "server/discover",
        (Service.OMNI2, Service.MCP_TOOLS),
        "CLIENT at omni2, SERVER at mcp-tools",
        "MCP: the session's capability discovery (span of the MCP SDK)",
    )
    REFUSED: Final = _span(
        "chat.refused",
        (Service.DASHBOARD, Service.OMNI2),
        "INTERNAL",
        "frames and messages of one connection the dashboard refused (rate, size, the rate "
        "limit's hold), or OMNI2 (a client that reached it without the dashboard), in its "
        "session trace; or a user's refusals past the trace budget, counted, in a trace of "
        "its own (services/common/churn.py)",
    )
    CORS_PREFLIGHT: Final = _span(
        "OPTIONS",
        (Service.DASHBOARD,),
        "SERVER",
        "FastAPI's server span of a CORS preflight, answered by the CORS middleware",
    )
    MCP_CONNECT: Final = _span(
        "mcp.connect",
        (Service.OMNI2,),
        "INTERNAL",
        "OMNI2 opening its MCP session and reading the tool catalogue at start, in a trace of "
        "its own, so that no chat message pays for the handshake",
    )
    SQL_CONNECT: Final = _span(
        "connect",
        (Service.OMNI2,),
        "CLIENT",
        "OMNI2_SQL_SPANS only: a new database connection (SQLAlchemy instrumentation)",
    )
    HTTP_SERVER: Final = _span(
        "* /*",
        (Service.DASHBOARD, Service.AUTH, Service.OMNI2, Service.FRONTEND),
        "SERVER",
        "opentelemetry-instrumentation-fastapi's server span of any other HTTP route (the "
        "dashboard's login, the chat page's /config.json); health checks, WebSocket routes "
        "and the page's static files are not traced",
    )

    @staticmethod
    def model_call(model: str) -> str:
        """GenAI convention: `chat <model>`."""
        return f"chat {model}"

    @staticmethod
    def execute_tool(tool: str) -> str:
        """GenAI convention: `execute_tool <name>`, one tool call of the agent loop."""
        return f"execute_tool {tool}"

    @staticmethod
    def mcp(method: str, target: str | None = None) -> str:
        """MCP convention: `<mcp.method.name> <target>`, e.g. `tools/call database_query`."""
        return f"{method} {target}" if target else method


class Attr:
    """Attribute keys: OpenTelemetry semantic conventions first, then our own (`chat.*`)."""

    CONVERSATION_ID: Final = _attr(
        "gen_ai.conversation.id", "the conversation; on every span of a message trace", "semconv"
    )
    USER_ID: Final = _attr("user.id", "verified identity only, never client-supplied", "semconv")
    GEN_AI_OPERATION: Final = _attr("gen_ai.operation.name", "`chat`", "semconv")
    GEN_AI_PROVIDER: Final = _attr("gen_ai.provider.name", "model provider", "semconv")
    GEN_AI_REQUEST_MODEL: Final = _attr("gen_ai.request.model", "model asked for", "semconv")
    GEN_AI_RESPONSE_MODEL: Final = _attr("gen_ai.response.model", "model that answered", "semconv")
    GEN_AI_INPUT_TOKENS: Final = _attr("gen_ai.usage.input_tokens", "prompt tokens", "semconv")
    GEN_AI_OUTPUT_TOKENS: Final = _attr(
        "gen_ai.usage.output_tokens", "completion tokens", "semconv"
    )
    GEN_AI_FINISH_REASONS: Final = _attr(
        "gen_ai.response.finish_reasons", "why the model stopped, e.g. [stop]", "semconv"
    )
    TIME_TO_FIRST_CHUNK: Final = _attr(
        "gen_ai.response.time_to_first_chunk", "seconds until the model's first chunk", "semconv"
    )
    ERROR_TYPE: Final = _attr("error.type", "short machine-readable failure class", "semconv")
    SERVER_ADDRESS: Final = _attr("server.address", "peer host of a client span", "semconv")
    SERVER_PORT: Final = _attr("server.port", "peer port of a client span", "semconv")
    URL_FULL: Final = _attr("url.full", "URL with secret query values redacted", "semconv")
    GEN_AI_TOOL_NAME: Final = _attr("gen_ai.tool.name", "tool the model asked for", "semconv")
    GEN_AI_TOOL_CALL_ID: Final = _attr(
        "gen_ai.tool.call.id", "the model's id of that call", "semconv"
    )
    GEN_AI_TOOL_TYPE: Final = _attr("gen_ai.tool.type", "`extension` for MCP tools", "semconv")
    GEN_AI_RESPONSE_ID: Final = _attr(
        "gen_ai.response.id", "provider's id of the response", "semconv"
    )
    MCP_METHOD: Final = _attr("mcp.method.name", "MCP JSON-RPC method, e.g. tools/call", "semconv")
    DB_SYSTEM: Final = _attr("db.system.name", "`sqlite` or `postgresql`", "semconv")
    DB_OPERATION: Final = _attr("db.operation.name", "what a database span did", "semconv")

    CLOSE_CODE: Final = _attr("chat.close.code", "WebSocket close code sent or received")
    CLOSE_REASON: Final = _attr("chat.close.reason", "WebSocket close reason sent or received")
    CLOSE_BY: Final = _attr("chat.close.by", "which side closed the WebSocket: server or client")
    FRAME_TYPE: Final = _attr("chat.frame.type", "type of the frame that ended the span")
    MESSAGE_CHARS: Final = _attr("chat.message.chars", "length of the user's text (no content)")
    REPLY_CHARS: Final = _attr("chat.reply.chars", "length of the streamed reply")
    TOKEN_FRAMES: Final = _attr("chat.token_frames", "token frames streamed for one message")
    TIME_TO_FIRST_TOKEN: Final = _attr(
        "chat.time_to_first_token_ms",
        "ms to the first token frame: client, from sending; omni2's turn, from receiving",
    )
    # Streaming per hop (no semantic convention exists): the gaps between token frames as
    # this layer saw them, set when a message ends with at least two token frames.
    STREAM_GAPS: Final = _attr(
        "chat.stream.gaps", "gaps between token frames measured (the first 10,000 of a message)"
    )
    STREAM_GAP_P50: Final = _attr("chat.stream.gap_p50_ms", "median gap between token frames")
    STREAM_GAP_P95: Final = _attr("chat.stream.gap_p95_ms", "95th percentile gap (nearest rank)")
    STREAM_GAP_MAX: Final = _attr("chat.stream.gap_max_ms", "the longest gap: the worst stall")
    STREAM_GAP_MAX_AT: Final = _attr(
        "chat.stream.gap_max_at_ms",
        "when the longest gap began (its earlier token frame), ms from the message span's start",
    )
    STREAM_FIRST_TO_LAST: Final = _attr(
        "chat.stream.first_to_last_ms", "ms from the first token frame to the last"
    )
    SAMPLE_KEEP: Final = _attr(
        "chat.sample.keep",
        "omni2 (conversation sampling on): the conversation's keep decision, a hash of its id "
        "against the ratio; the ingesters' tail sampling reads it (docs/sampling.md)",
    )
    AUTH_RESULT: Final = _attr("auth.result", "`allowed` or `denied`")
    AUTH_FAILURE: Final = _attr("auth.failure_reason", "why a token was refused")
    LINK_ROLE: Final = _attr("chat.link.role", "on a span link: what the linked span is")
    USER_ROLE: Final = _attr("chat.user.role", "omni2: the user's role from its database")
    CHECK_NAME: Final = _attr(
        "chat.check.name",
        "which check a `check <name>` event ran; on the `checks` span, the one that denied or "
        "failed",
    )
    CHECK_RESULT: Final = _attr(
        "chat.check.result",
        "`pass` or `deny`: of one check (its event), or of the run (the `checks` span; absent "
        "on both when a check failed)",
    )
    CHECK_DURATION: Final = _attr(
        "chat.check.duration_ms", "on a `check <name>` event: how long that check took"
    )
    LIMIT: Final = _attr("chat.limit", "the limit a check compared against")
    LIMIT_USED: Final = _attr("chat.limit.used", "how much of it was used before this message")
    LIMIT_RESERVED: Final = _attr(
        "chat.limit.reserved", "tokens of the daily limit reserved by answers in progress"
    )
    HISTORY_MESSAGES: Final = _attr(
        "chat.history.messages", "earlier messages of the conversation given to the model"
    )
    AGENT_ITERATIONS: Final = _attr("chat.agent.iterations", "model calls in one turn")
    AGENT_MAX_ITERATIONS: Final = _attr("chat.agent.max_iterations", "the agent loop's cap")
    TOOL_CALLS: Final = _attr("chat.tool_calls", "tool calls in one turn")
    TOOL_STATUS: Final = _attr("chat.tool.status", "`ok` or `error`: the tool's real outcome")
    USAGE_COST: Final = _attr("chat.usage.cost", "cost of one message (USD, from model prices)")
    FLOW_EVENTS: Final = _attr("chat.flow_events", "flow events stored for one message")
    HTTP_STATUS: Final = _attr(
        "http.response.status_code",
        "the HTTP status: FastAPI's server spans, and the answer to our own client spans",
        "semconv",
    )
    ROWS: Final = _attr("chat.db.rows", "rows a database span wrote or a tool returned")
    PERSIST_BATCH: Final = _attr(
        "chat.db.batch", "messages stored in the same transaction (turns that ended together)"
    )
    FRAMES_REFUSED: Final = _attr(
        "chat.frames.refused",
        "dashboard and omni2: frames of a connection refused by its rate limit",
    )
    MESSAGES_REFUSED: Final = _attr(
        "chat.messages.refused",
        "first hop: messages answered with the rate limit's refusal while it held the user "
        "(its retry_after), without a message trace each",
    )
    CONNECTS_REFUSED: Final = _attr(
        "chat.connects.refused",
        "first hop: a user's connects refused by the connect rate past the budget of traced "
        "refusals, counted on one span",
    )
    CLIENT_CONTEXT: Final = _attr(
        "chat.client.context",
        "the first hop we run (dashboard; omni2 when reached without it): the client's trace "
        "context, `none`, `continued`, `linked`, `malformed` or `reused` (a trace id already in "
        "use: a trace of our own, not joined); the audit reads it to tell a client that sent "
        "no context (not traced) from a client span that was lost",
    )
    CLIENT_SAMPLED: Final = _attr(
        "chat.client.sampled",
        "with `continued`/`linked`: the client's own sampled flag (false: it says it recorded "
        "no span); it decides nothing about what we trace",
    )
    ENTRY: Final = _attr(
        "chat.entry",
        "omni2: how the connection reached it, `dashboard` (the dashboard's key), `gateway` "
        "(Traefik's public entry point, its key) or `direct` (neither)",
    )
    TELEMETRY_PATH: Final = _attr(
        "chat.telemetry.path",
        "set by the collector, not by us: `public` on every span that came through the public "
        "OTLP path (browsers, chat clients; whatever the client set is overwritten); absent "
        "on spans of the internal path (our services, with its credential)",
        "collector",
    )


# Attributes of the HTTP server spans of opentelemetry-instrumentation-fastapi (listed so the
# table is complete; stable HTTP semantic conventions).
for _key in (
    "http.request.method",
    "http.request.method_original",
    "http.route",
    "network.protocol.version",
    "url.path",
    "url.query",
    "url.scheme",
    "user_agent.original",
    "client.address",
    "client.port",
):
    _attr(_key, "HTTP server span (opentelemetry-instrumentation-fastapi)", "fastapi")


# The model providers' HTTP requests (opentelemetry-instrumentation-httpx on the SDKs' client).
_span(
    "POST",
    (Service.OMNI2,),
    "CLIENT",
    "a model provider's HTTP request (anthropic or openai SDK), under `chat <model>`",
)
_attr("network.peer.address", "the host an HTTP request went to", "httpx")


# Spans and attributes of opentelemetry-instrumentation-sqlalchemy (OMNI2_SQL_SPANS only).
for _operation in ("INSERT", "SELECT", "UPDATE", "DELETE"):
    _span(
        f"{_operation} *",
        (Service.OMNI2,),
        "CLIENT",
        f"OMNI2_SQL_SPANS only: one {_operation} statement, `{_operation} <database>`",
    )
    _span(
        _operation,
        (Service.OMNI2,),
        "CLIENT",
        f"OMNI2_SQL_SPANS only: one {_operation} statement (PostgreSQL: no database in the name)",
    )
for _key, _what in (
    ("db.namespace", "the database (SQLite: its file; PostgreSQL: its name)"),
    ("db.query.text", "the statement with placeholders; the values are never recorded"),
):
    _attr(_key, _what, "sqlalchemy")


# Attributes that the MCP SDK's own spans carry (we use its spans for MCP, not our own).
for _key, _what in (
    ("jsonrpc.request.id", "the JSON-RPC request id"),
    ("mcp.protocol.version", "the negotiated MCP protocol version"),
    ("rpc.response.status_code", "the JSON-RPC error code of a failed request"),
    ("gen_ai.prompt.name", "the MCP prompt asked for"),
):
    _attr(_key, _what, "mcp-sdk")


def _metric(
    name: str,
    instrument: str,
    unit: str,
    attributes: tuple[str, ...],
    description: str,
    follows: str = "ours",
) -> str:
    METRICS[name] = MetricDoc(name, instrument, unit, attributes, description, follows)
    return name


# The GenAI and MCP metrics follow the semantic conventions as of this release, the last one
# with the GenAI conventions in the semantic-conventions repository (they have since moved to
# semantic-conventions-genai). All are "development" stability there.
SEMCONV_GENAI = "OpenTelemetry semconv v1.41.0 (gen-ai-metrics)"
SEMCONV_MCP = "OpenTelemetry semconv v1.41.0 (mcp)"
# Attributes of the GenAI metrics (metric_attributes.gen_ai): the first two required, the
# request model conditionally required, the rest recommended or conditional.
_GENAI_METRIC_ATTRS = (
    "gen_ai.operation.name",
    "gen_ai.provider.name",
    "gen_ai.request.model",
    "gen_ai.response.model",
    "server.address",
    "server.port",
)
# Attributes of the MCP operation metrics (mcp.common.attributes) that we set.
_MCP_METRIC_ATTRS = (
    "mcp.method.name",
    "gen_ai.operation.name",
    "gen_ai.tool.name",
    "mcp.protocol.version",
    "network.transport",
    "error.type",
)


class Metric:
    """Metrics the services export by OTLP beside their spans: what a dashboard charts over
    time, where a trace shows one message. Jaeger's collector serves them to Prometheus."""

    TIME_TO_FIRST_TOKEN: Final = _metric(
        "chat.time_to_first_token",
        "histogram",
        "s",
        (),
        "dashboard: from a message frame to its first token frame; omni2: from the message to "
        "its first token sent (the layer is the series' service)",
    )
    TOKEN_USAGE: Final = _metric(
        "gen_ai.client.token.usage",
        "histogram",
        "{token}",
        (*_GENAI_METRIC_ATTRS, "gen_ai.token.type", "user.id"),
        "omni2: tokens of one model call by `gen_ai.token.type`; `user.id` is ours (usage per "
        "user)",
        SEMCONV_GENAI,
    )
    COST: Final = _metric(
        "chat.usage.cost",
        "counter",
        "{USD}",
        ("gen_ai.request.model", "user.id"),
        "omni2: cost of answered messages from the model prices, per user",
    )
    OPERATION_DURATION: Final = _metric(
        "gen_ai.client.operation.duration",
        "histogram",
        "s",
        (*_GENAI_METRIC_ATTRS, "error.type"),
        "omni2: one model call, from the request to the end of its stream (error.type when it "
        "failed)",
        SEMCONV_GENAI,
    )
    TIME_TO_FIRST_CHUNK: Final = _metric(
        "gen_ai.client.operation.time_to_first_chunk",
        "histogram",
        "s",
        _GENAI_METRIC_ATTRS[:3] + _GENAI_METRIC_ATTRS[4:],
        "omni2: from a streamed model call's request to its first text chunk",
        SEMCONV_GENAI,
    )
    TIME_PER_OUTPUT_CHUNK: Final = _metric(
        "gen_ai.client.operation.time_per_output_chunk",
        "histogram",
        "s",
        _GENAI_METRIC_ATTRS[:3] + _GENAI_METRIC_ATTRS[4:],
        "omni2: each text chunk after the first of a streamed model call, from the previous one",
        SEMCONV_GENAI,
    )
    SERVER_TIME_TO_FIRST_TOKEN: Final = _metric(
        "gen_ai.server.time_to_first_token",
        "histogram",
        "s",
        _GENAI_METRIC_ATTRS[:3],
        "omni2 as the server of the stream: from a message to its first token frame sent "
        "(answered messages)",
        SEMCONV_GENAI,
    )
    SERVER_TIME_PER_OUTPUT_TOKEN: Final = _metric(
        "gen_ai.server.time_per_output_token",
        "histogram",
        "s",
        _GENAI_METRIC_ATTRS[:3],
        "omni2: (request duration - time to first token) / (output tokens - 1), once per "
        "answered message with two or more output tokens",
        SEMCONV_GENAI,
    )
    SERVER_REQUEST_DURATION: Final = _metric(
        "gen_ai.server.request.duration",
        "histogram",
        "s",
        (*_GENAI_METRIC_ATTRS[:3], "error.type"),
        "omni2: one message, from receiving it to its last token (model and tool calls "
        "included; before its rows are stored and its done or error frame is sent)",
        SEMCONV_GENAI,
    )
    MCP_CLIENT_DURATION: Final = _metric(
        "mcp.client.operation.duration",
        "histogram",
        "s",
        (*_MCP_METRIC_ATTRS, "server.address", "server.port"),
        "omni2's MCP client: one request (tools/list, tools/call), sent to answer",
        SEMCONV_MCP,
    )
    MCP_SERVER_DURATION: Final = _metric(
        "mcp.server.operation.duration",
        "histogram",
        "s",
        _MCP_METRIC_ATTRS,
        "mcp-tools: one request or notification, received to answer",
        SEMCONV_MCP,
    )


class LinkRole:
    """Values of `chat.link.role` on span links from a message trace to its session trace."""

    UPSTREAM_CONNECT: Final = "upstream-connect"  # dashboard relay -> its upstream connect span
    GATEWAY: Final = "gateway"  # omni2 turn -> the Traefik span it was reached through
    CLIENT: Final = "client"  # dashboard span -> the client's span (client_trace=link mode)
    FRONT_GATEWAY: Final = "front-gateway"  # dashboard connect -> Traefik's front entry span


class ClientContext:
    """Values of `chat.client.context`: what the client's trace context was at the first hop."""

    NONE: Final = "none"  # the client sent none (an uninstrumented page, wscat, an app)
    CONTINUED: Final = "continued"  # its span is the parent of ours
    LINKED: Final = "linked"  # ours roots a trace of its own and links to it
    MALFORMED: Final = "malformed"  # unreadable: a fresh trace
    REUSED: Final = "reused"  # its trace id was used before (another message): a fresh trace


class Entry:
    """Values of `chat.entry`: how a connection reached OMNI2."""

    DASHBOARD: Final = "dashboard"  # through a dashboard (its key), so through the gateway too
    GATEWAY: Final = "gateway"  # through Traefik's public entry point (its key)
    DIRECT: Final = "direct"  # neither: straight to OMNI2


class McpMeta:
    """Keys OMNI2 puts in an MCP request's `params._meta` beside `traceparent`/`tracestate`."""

    CONVERSATION_ID: Final = "omni2/conversation_id"  # becomes gen_ai.conversation.id there
    USER_ID: Final = "omni2/user_id"  # becomes user.id there (verified by OMNI2)


class Flow:
    """`kind` of the flow events stored per message (the audit trail)."""

    CONNECT: Final = "connect"  # a connection accepted or refused
    CHECK: Final = "check"  # one check (user, connections; user, rate_limit, usage)
    MODEL_CALL: Final = "model_call"  # one call of the model
    TOOL_CALL: Final = "tool_call"  # one tool call, with its real status and duration
    ERROR: Final = "error"  # the message failed
    REFUSED: Final = "refused"  # frames or a message refused (frame limits, dashboard or OMNI2)
    FRAME: Final = "frame"  # a client frame refused before it became a message (malformed)
    CLOSE: Final = "close"  # OMNI2 closed an open connection (its token expired)


class Event:
    """Span event names (an fnmatch pattern where the name carries a value)."""

    FIRST_TOKEN: Final = "first_token"  # first token frame seen by this layer
    CHECK: Final = "check *"  # omni2: one check of a run, on its `checks` span

    @staticmethod
    def check(name: str) -> str:
        """omni2: one check on its run's `checks` span, e.g. `check rate_limit`."""
        return f"check {name}"


def documented_span(service: str, name: str) -> SpanDoc | None:
    """The table entry that covers a span, if any."""
    for doc in SPANS.values():
        if service in doc.services and fnmatchcase(name, doc.name):
            return doc
    return None


def documented_event(name: str) -> bool:
    """Whether `Event` names a span event called `name`."""
    return any(
        fnmatchcase(name, value)
        for key, value in vars(Event).items()
        if key.isupper() and isinstance(value, str)
    )


def telemetry_markdown() -> str:
    """The table as Markdown (docs/telemetry.md)."""
    lines = [
        "# Telemetry emitted by omni-trace",
        "",
        "Generated from `otel/names.py` by `omni-trace names --markdown`; a test keeps it in",
        "sync, and a stack test checks that the services emit nothing outside it.",
        "",
        "## Spans",
        "",
        "| name | services | kind | what |",
        "|---|---|---|---|",
    ]
    for span in SPANS.values():
        lines.append(
            f"| `{span.name}` | {', '.join(span.services)} | {span.kind} | {span.description} |"
        )
    lines += ["", "## Attributes", "", "| key | source | what |", "|---|---|---|"]
    for attr in ATTRIBUTES.values():
        lines.append(f"| `{attr.key}` | {attr.source} | {attr.description} |")
    lines += ["", "## Streaming per hop", ""]
    lines.append(
        "Each layer that relays tokens (the chat client, the browser, the dashboard's "
        "`chat.relay`, OMNI2's `chat.turn`) puts the gaps between token frames as it saw them "
        "on its message span (`chat.stream.*`, from `otel/stream.py`: count, p50, p95, max, "
        "when the longest began, first to last; the first 10,000 gaps of a message). The "
        "audit's stall verdict compares each layer's longest gap with the next layer inward: "
        "the hop that added the most, at least 50 ms (`audit --stall-ms`) and twice the layer "
        "below's, held the tokens: `the dashboard held tokens for 180 ms at 2.3 s`. OMNI2, "
        "the innermost, is never named (its gaps are the model's pace), nor is a client: its "
        "stats come by the public path and are shown as the client's word."
    )
    lines += ["", "## Metrics", ""]
    lines.append(
        "`follows`: the convention and version a name follows, or `ours` where none exists. "
        "`OTEL_SEMCONV_STABILITY_OPT_IN=gen_ai_latest_experimental` stops omni2's "
        "`chat.time_to_first_token`, which `gen_ai.server.time_to_first_token` replaces."
    )
    lines += ["", "| name | instrument | unit | attributes | follows | what |"]
    lines.append("|---|---|---|---|---|---|")
    for metric in METRICS.values():
        names = ", ".join(f"`{a}`" for a in metric.attributes) or "(the service only)"
        lines.append(
            f"| `{metric.name}` | {metric.instrument} | `{metric.unit}` | {names} "
            f"| {metric.follows} | {metric.description} |"
        )
    lines += ["", "## Span links", "", "| `chat.link.role` | target |", "|---|---|"]
    lines.append(f"| `{LinkRole.UPSTREAM_CONNECT}` | the dashboard's `upstream connect` span |")
    lines.append(f"| `{LinkRole.GATEWAY}` | Traefik's `ReverseProxy` span of the connection |")
    lines.append(f"| `{LinkRole.CLIENT}` | the client's span, when the dashboard links instead |")
    lines.append(
        f"| `{LinkRole.FRONT_GATEWAY}` | Traefik's `ReverseProxy` span of the front entry point "
        "(dashboard replicas), from the dashboard's `chat.connect`, in the trace Traefik started "
        "for the handshake |"
    )
    return "\n".join(lines) + "\n"
