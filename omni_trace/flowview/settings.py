from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from omni_trace.stack.paths import FRONTEND_DIST


class FlowViewSettings(BaseSettings):
    """Environment: FLOWVIEW_HOST, FLOWVIEW_PORT, FLOWVIEW_JAEGER_QUERY_URL,
    FLOWVIEW_PROMETHEUS_URL, FLOWVIEW_JAEGER_UI_URL, FLOWVIEW_DIST_DIR, OMNI_LOG_LEVEL."""

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
    jaeger_ui_url: str = Field(
        default="",
        description="A Jaeger with its web UI (compose's), which the page links each trace to; "
        "empty: no such links (the Jaeger built here has no UI).",
    )
    dist_dir: Path = Field(
        default=FRONTEND_DIST, description="The built page (frontend/dist: flow.html, flow.js)."
    )
    log_level: str = Field(default="INFO", validation_alias="OMNI_LOG_LEVEL")
    max_frame_bytes: int = Field(
        default=64 * 1024, description="No WebSocket here; the limit of any."
    )
