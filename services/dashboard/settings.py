from __future__ import annotations

import ipaddress
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict

from otel.names import SpanName
from services.common.settings import ChurnLimits, CommonSettings, DashboardKey, FrameLimits
from services.db import DEFAULT_DATABASE_URL

# The chat page's origin (services/frontend on its default port).
CHAT_PAGE_ORIGINS = ["http://127.0.0.1:3001", "http://localhost:3001"]


class DashboardSettings(CommonSettings, DashboardKey, FrameLimits, ChurnLimits):
    """Environment: DASHBOARD_HOST, DASHBOARD_PORT, DASHBOARD_UPSTREAM_WS_URL, ..."""

    model_config = SettingsConfigDict(
        env_prefix="DASHBOARD_", extra="ignore", hide_input_in_errors=True
    )

    host: str = "127.0.0.1"
    port: int = 8091
    upstream_ws_url: str = Field(
        default="ws://127.0.0.1:8090/ws/chat", description="Traefik's /ws/chat route."
    )
    upstream_open_timeout_s: float = Field(default=5.0, gt=0)
    behind_gateway: bool = Field(
        default=False,
        description="A gateway (Traefik's `front` entry point, with dashboard replicas) "
        "reaches the dashboard: each connect span links to the gateway's span from the "
        "traceparent header. Only for a dashboard that nothing else can reach: a client could "
        "set it. The login's client address is decided by trusted_proxies alone.",
    )
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description="Addresses (or networks, e.g. 10.0.0.0/8) of the gateway in front of the "
        "dashboard, as a JSON list: only a request from one of them has its client address "
        "taken from X-Forwarded-For (the last entry, the one the gateway appended). A request "
        "from anywhere else, even with behind_gateway set, is counted on its own address "
        "whatever the header says. `omni-trace up` sets it for dashboard replicas; where a "
        "network policy lets only the gateway in, 0.0.0.0/0 and ::/0 trust every peer.",
    )

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for entry in value:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(f"{entry!r} is not an IP address or network") from None
        return value

    token_ttl_s: int = Field(default=3600, gt=0)

    # -- who may talk to the dashboard --------------------------------------------------------
    allowed_origins: list[str] = Field(
        default_factory=lambda: list(CHAT_PAGE_ORIGINS),
        description="Origins allowed by CORS and on /ws/chat (refused with 4403 otherwise); "
        "a client that sends no Origin (not a browser) is not affected. `*` allows all.",
    )

    # -- tracing: the server decides ----------------------------------------------------------
    trace_sample_ratio: float = Field(
        default=1.0,
        ge=0,
        le=1,
        description="Share of connections traced; one decision per connection covers its "
        "session trace and every message trace.",
    )
    client_trace: Literal["continue", "link"] = Field(
        default="continue",
        description="continue: a client's traceparent roots the trace (the chain starts in "
        "the browser); link: each connection and message starts its own trace and links to "
        "the client's span (for public deployments).",
    )
    trace_id_memory: int = Field(
        default=65_536,
        ge=1,
        description="Client trace ids remembered: a message or connection whose context "
        "reuses one (which would put its spans into another message's trace) starts a trace "
        "of its own instead (chat.client.context=reused).",
    )
    relay_span_name: str = Field(
        default=SpanName.RELAY,
        min_length=1,
        max_length=128,
        description="Name of the span of each relayed message, for stacks that name their "
        "layers their own way (a chain spec then says so: docs/toolkit.md).",
    )

    # -- fault injection (drills and tests), off by default ------------------------------------
    relay_stall_ms: float = Field(
        default=0.0,
        ge=0,
        le=60_000,
        description="Fault injection: once per message, the relay holds the stream this long "
        "(a sleep before forwarding a token frame), so the dashboard's own gaps between token "
        "frames show a stall that OMNI2's do not and `omni-trace audit` names the dashboard "
        "hop. 0 (the default): off.",
    )
    relay_stall_after_tokens: int = Field(
        default=3,
        ge=1,
        le=100_000,
        description="With relay_stall_ms: the token frame after which the relay holds the "
        "stream (it holds the next one).",
    )

    # -- login -------------------------------------------------------------------------------
    database_url: SecretStr = Field(
        default=SecretStr(DEFAULT_DATABASE_URL),
        description="The database shared with OMNI2 (services/db), where /api/login reads "
        "users and password hashes, "
        "refused frames are recorded and, with login_limits=database, failed logins are "
        "counted (OMNI2 creates the tables: the dashboard never does). `omni-trace up` "
        "passes the stack's.",
    )
    database_timeout_s: float = Field(
        default=5.0, gt=0, description="A login waits this long for the user store, then 503."
    )
    login_limits: Literal["memory", "database"] = Field(
        default="memory",
        description="Where failed logins are counted: memory, in this process (one "
        "dashboard); database, in the shared database (database_url), shared by dashboard "
        "replicas behind a load balancer, so that a client alternating between them gets "
        "one allowance, not one per replica. A database problem answers 503 with a reason.",
    )
    login_max_failures_per_user: int = Field(
        default=5,
        ge=1,
        description="Failed logins per user name from one client address within the window, "
        "then 429 for that address (the owner elsewhere is not locked out); beyond as many "
        "failures from all addresses together, the name's logins are slowed down.",
    )
    login_slow_down_s: float = Field(
        default=1.0,
        ge=0,
        description="The first spacing between logins on a name that failed "
        "login_max_failures_per_user times (all addresses); it doubles with each further "
        "failure. 0: no slow-down.",
    )
    login_slow_down_max_s: float = Field(
        default=10.0, ge=0, description="The longest spacing between logins on one name."
    )
    login_slow_down_max_wait_s: float = Field(
        default=30.0,
        ge=0,
        description="A login waits at most this long for its turn on a slowed-down name; "
        "beyond, 429 with Retry-After.",
    )
    login_max_failures_per_address: int = Field(
        default=20, ge=1, description="Failed logins per client address within the window."
    )
    login_failure_window_s: float = Field(
        default=300.0, gt=0, description="The sliding window of both login limits."
    )
    login_limit_max_keys: int = Field(
        default=10_000, ge=1, description="Names (and addresses) the login limits remember."
    )
    login_max_concurrent_verifications: int = Field(
        default=4, ge=1, description="Password hashes checked at once (each uses 64 MiB)."
    )
