from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from services.common.settings import CommonSettings
from services.omni2.settings import DEFAULT_DATABASE_URL


class DashboardSettings(CommonSettings):
    """Environment: DASHBOARD_HOST, DASHBOARD_PORT, DASHBOARD_UPSTREAM_WS_URL, ..."""

    model_config = SettingsConfigDict(env_prefix="DASHBOARD_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8091
    upstream_ws_url: str = Field(
        default="ws://127.0.0.1:8090/ws/chat", description="Traefik's /ws/chat route."
    )
    upstream_open_timeout_s: float = Field(default=5.0, gt=0)
    token_ttl_s: int = Field(default=3600, gt=0)
    cors_origins: list[str] = Field(default_factory=lambda: ["*"])

    # -- login -------------------------------------------------------------------------------
    database_url: SecretStr = Field(
        default=SecretStr(DEFAULT_DATABASE_URL),
        description="OMNI2's database, where /api/login reads users and password hashes "
        "(read only: OMNI2 creates the tables). `omni-trace up` passes the stack's.",
    )
    database_timeout_s: float = Field(
        default=5.0, gt=0, description="A login waits this long for the user store, then 503."
    )
    login_max_failures_per_user: int = Field(
        default=5, ge=1, description="Failed logins per user name within the window, then 429."
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
