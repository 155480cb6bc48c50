from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class FlowViewSettings(BaseSettings):
    """Environment: FLOWVIEW_HOST, FLOWVIEW_PORT, FLOWVIEW_JAEGER_QUERY_URL, OMNI_LOG_LEVEL."""

    model_config = SettingsConfigDict(env_prefix="FLOWVIEW_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 16687
    jaeger_query_url: str = Field(
        default="http://127.0.0.1:16686",
        description="Where the traces are read (Jaeger's query API).",
    )
    prometheus_url: str = Field(
        default="", description="Prometheus with Jaeger's span metrics; empty: no hop chart."
    )
    log_level: str = Field(default="INFO", validation_alias="OMNI_LOG_LEVEL")
    max_frame_bytes: int = Field(
        default=64 * 1024, description="No WebSocket here; the limit of any."
    )
