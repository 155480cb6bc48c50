from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from services.common.settings import CommonSettings


class Omni2Settings(CommonSettings):
    """Environment: OMNI2_HOST, OMNI2_PORT, OMNI2_MODEL_TOKEN_DELAY_MS, OMNI2_HISTORY_TURNS, ..."""

    model_config = SettingsConfigDict(env_prefix="OMNI2_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8000
    model_provider: str = Field(default="offline", description="Which model answers.")
    model_name: str = "omni2-offline-1"
    model_token_delay_ms: float = Field(
        default=15.0, ge=0, description="Offline model: pause between streamed tokens."
    )
    history_turns: int = Field(default=20, ge=0, description="Earlier turns sent to the model.")
