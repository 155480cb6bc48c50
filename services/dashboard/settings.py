from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from services.common.settings import CommonSettings


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
