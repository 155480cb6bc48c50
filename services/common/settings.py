"""Settings shared by every service: the JWT secret and logging, read from the environment."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

# A fixed development default so a bare `python -m services.x` works; `omni-trace up`
# generates a fresh random secret per run and passes it through the environment.
DEV_JWT_SECRET = "omni2-dev-secret-change-me-0123456789abcdef"


class CommonSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", extra="ignore")

    jwt_secret: SecretStr = Field(
        default=SecretStr(DEV_JWT_SECRET),
        validation_alias="OMNI_JWT_SECRET",
        description="HMAC secret shared by the dashboard (issuer), auth and OMNI2 (verifiers).",
    )
    log_level: str = Field(default="INFO", validation_alias="OMNI_LOG_LEVEL")
