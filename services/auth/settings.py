from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from services.common.settings import CommonSettings


class AuthSettings(CommonSettings):
    """Environment: AUTH_HOST, AUTH_PORT, plus OMNI_JWT_SECRET and OMNI_LOG_LEVEL."""

    model_config = SettingsConfigDict(env_prefix="AUTH_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8700
