from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from services.common.settings import CommonSettings, GatewayKeys


class AuthSettings(CommonSettings, GatewayKeys):
    """Environment: AUTH_HOST, AUTH_PORT, plus OMNI_JWT_SECRET, OMNI_DASHBOARD_KEY,
    OMNI_EDGE_KEY and OMNI_LOG_LEVEL."""

    model_config = SettingsConfigDict(env_prefix="AUTH_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8700
