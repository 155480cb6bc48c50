from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from otel.names import SpanName
from services.common.settings import ChurnLimits, CommonSettings, FrameLimits, GatewayKeys
from services.db import DEFAULT_DATABASE_URL


class Omni2Settings(CommonSettings, GatewayKeys, FrameLimits, ChurnLimits):
    """Environment: OMNI2_HOST, OMNI2_PORT, OMNI2_DATABASE_URL, OMNI2_MODEL_PROVIDER, ...

    API keys and the database URL (it may hold a password) are SecretStr: they never reach a
    span, a log line or a repr.
    """

    model_config = SettingsConfigDict(env_prefix="OMNI2_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8000
    max_frame_bytes: int = Field(
        default=65 * 1024,
        ge=1024,
        description="Largest WebSocket frame accepted (1009 beyond): the dashboard's 64 KiB "
        "plus room for the trace context it writes into each message frame.",
    )

    # -- database ----------------------------------------------------------------------------
    database_url: SecretStr = Field(
        default=SecretStr(DEFAULT_DATABASE_URL),
        description="SQLAlchemy async URL: sqlite+aiosqlite:///path or "
        "postgresql+asyncpg://user:password@host:port/db (`omni-trace up` passes "
        "<run dir>/omni2.db).",
    )
    seed_demo_users: bool = Field(default=True, description="Add the demo roles and users.")
    sql_spans: bool = Field(
        default=False,
        description="A span per SQL statement (opentelemetry-instrumentation-sqlalchemy) under "
        "chat.persist and the checks. Off by default: a message's trace stays small.",
    )
    demo_users_file: Path | None = Field(
        default=None,
        description="Where OMNI2 writes the demo users it seeds, with their (public, "
        "documented) demo passwords, so that a local harness can log in as them without "
        "knowing OMNI2's internals; written 0600 at start. Unset: not written.",
    )

    # -- model -------------------------------------------------------------------------------
    model_provider: str = Field(
        default="offline", description="Which model answers: offline, anthropic or openai."
    )
    model_name: str = "omni2-offline-1"
    model_token_delay_ms: float = Field(
        default=15.0, ge=0, description="Offline model: pause between streamed tokens."
    )
    model_max_tokens: int = Field(default=1024, gt=0, description="Providers: max output.")
    chunk_metrics: bool = Field(
        default=True,
        description="Record gen_ai.client.operation.time_per_output_chunk for every chunk "
        "after the first, as the GenAI conventions define it: one histogram record per chunk "
        "(about 5 us each with the Python SDK, most of the metrics' cost per message); false "
        "leaves that one metric out.",
    )
    model_timeout_s: float = Field(default=60.0, gt=0, description="Providers: HTTP timeout.")
    anthropic_api_key: SecretStr | None = None
    anthropic_base_url: str = "https://api.anthropic.com"
    openai_api_key: SecretStr | None = None
    openai_base_url: str = Field(
        default="https://api.openai.com/v1",
        description="Any OpenAI-compatible server: OpenAI, vLLM (http://host:8000/v1), "
        "Ollama (http://host:11434/v1).",
    )
    price_input_per_mtok: float = Field(
        default=1.0, ge=0, description="Cost of a million input tokens (USD) for usage."
    )
    price_output_per_mtok: float = Field(
        default=3.0, ge=0, description="Cost of a million output tokens (USD) for usage."
    )

    system_prompt: str = Field(
        default="You are OMNI2 Assistant. Answer briefly. Use the tools you are given when the "
        "user asks about data in the database.",
        description="The system message every model call starts with.",
    )

    trace_sample_ratio: float = Field(
        default=1.0,
        ge=0,
        le=1,
        description="Share of connections traced among those that reach OMNI2 without a "
        "dashboard (Traefik's public entry point, or straight): OMNI2 decides for them, once "
        "per connection, whatever trace flags the client sent. A dashboard's connections "
        "carry its own decision (its key says so).",
    )
    trace_id_memory: int = Field(
        default=65_536,
        ge=1,
        description="Client trace ids remembered (connections without a dashboard): a "
        "message whose context reuses one starts a trace of its own (chat.client.context="
        "reused), so a client cannot put its spans into another message's trace.",
    )
    conversation_sample_ratio: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="Conversation-consistent tail sampling (the Kafka pipeline's ingesters "
        "decide; docs/sampling.md): each conversation's keep decision, a hash of its id "
        "against this ratio, is recorded on its spans as chat.sample.keep. Unset: not recorded.",
    )
    turn_span_name: str = Field(
        default=SpanName.TURN,
        min_length=1,
        max_length=128,
        description="Name of the span of each answered message, for stacks that name their "
        "layers their own way (a chain spec then says so: docs/toolkit.md).",
    )

    usage_webhook_url: str | None = Field(
        default=None,
        description="After each answered message, its usage (tokens, cost, ids; no content) is "
        "POSTed here in the background, with the trace context in every configured propagator "
        "(OTEL_PROPAGATORS=tracecontext,baggage,jaeger adds uber-trace-id). Unset: no call.",
    )
    usage_webhook_timeout_s: float = Field(
        default=2.0, gt=0, le=30, description="Each webhook call gives up after this long."
    )

    # -- conversation and tools ---------------------------------------------------------------
    history_turns: int = Field(default=20, ge=0, description="Earlier turns sent to the model.")
    max_agent_iterations: int = Field(
        default=5, ge=1, description="Model calls per message (tool rounds + the answer)."
    )
    mcp_url: str | None = Field(
        default=None, description="The MCP tool server (streamable HTTP), e.g. http://host/mcp."
    )
    mcp_auth_token: SecretStr | None = Field(
        default=None,
        description="The MCP tool server's credential (MCP_TOOLS_AUTH_TOKEN there), sent as "
        "`Authorization: Bearer` on every MCP request; required with OMNI2_MCP_URL.",
    )
    mcp_timeout_s: float = Field(default=10.0, gt=0, description="Per MCP request.")
    usage_warning_ratio: float = Field(
        default=0.8, gt=0, le=1, description="Send a `warning` frame past this share of a limit."
    )

    # -- limits across connections ------------------------------------------------------------
    connection_slots: Literal["process", "database"] = Field(
        default="process",
        description="Where the per-user connection count lives: in this process (one OMNI2), "
        "or in the database, shared by every replica (a row per open connection, refreshed "
        "while the replica runs; a dead replica's rows stop counting after "
        "connection_slot_stale_s).",
    )
    connection_slot_stale_s: float = Field(default=30.0, gt=0)
    replica_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        description="This replica's name when OMNI2 replicas share one database (unique per "
        "replica, and the same when it restarts): its connection slots and its usage "
        "reservations are its own, and at start it releases only the reservations it left "
        "itself. Unset: one OMNI2 serves the database and releases every reservation at "
        "start (with OMNI2_CONNECTION_SLOTS=database, a random name: a replica all the same).",
    )
    reservation_stale_s: float = Field(
        default=30.0,
        gt=0,
        description="Replicas: each one says it runs every reservation_stale_s / 3; the usage "
        "reservations of a replica not seen for this long (it died mid-answer and did not "
        "come back) are released by the replicas still running.",
    )
    max_connections_per_user: int = Field(
        default=5,
        ge=1,
        description="Open chat connections per user, unless the user's or role's "
        "max_connections says otherwise; one more is refused with 4429.",
    )
    token_check_interval_s: float = Field(
        default=5.0,
        gt=0,
        description="How often the tokens of open connections are checked against their "
        "users' token generation: a connection whose token was revoked (logout, password "
        "change, block) is closed with 4401 within this time. One query per interval for all "
        "of this process's connections.",
    )
    usage_reserve_tokens: int = Field(
        default=2000,
        ge=1,
        description="Tokens each accepted message reserves of a daily token limit until its "
        "usage is saved (cost: the same tokens at the higher price). A message is refused "
        "while used + reserved reaches the limit, so parallel connections overshoot it by one "
        "answer at most (as long as an answer stays within this reservation).",
    )

    @property
    def replicated(self) -> bool:
        """Other OMNI2 replicas may share this database (OMNI2_REPLICA_ID is set, or the
        connection slots are shared): reservations are then owned per replica."""
        return self.replica_id is not None or self.connection_slots == "database"
