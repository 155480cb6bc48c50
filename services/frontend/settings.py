from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

# frontend/dist of this checkout: `npm run build` in frontend/ (run by scripts/bootstrap).
DEFAULT_DIST = Path(__file__).resolve().parents[2] / "frontend" / "dist"


class FrontendSettings(BaseSettings):
    """Environment: FRONTEND_HOST, FRONTEND_PORT, FRONTEND_DASHBOARD_URL, ...

    Everything the page must know about the stack is here and reaches the page as
    /config.json, so one bundle works against any stack.
    """

    model_config = SettingsConfigDict(env_prefix="FRONTEND_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 3001
    dist_dir: Path = Field(default=DEFAULT_DIST, description="The built pages (frontend/dist).")
    dashboard_url: str = Field(
        default="http://127.0.0.1:8091", description="Dashboard backend: POST /api/login."
    )
    chat_ws_url: str = Field(
        default="ws://127.0.0.1:8091/ws/chat", description="The dashboard's /ws/chat."
    )
    otlp_traces_url: str | None = Field(
        default="http://127.0.0.1:4319/v1/traces",
        description="Where the page exports its spans: the public OTLP/HTTP path (client "
        "services only, traces only; it runs in every browser, so never the internal path); "
        "empty switches tracing off.",
    )
    jaeger_query_url: str = Field(default="http://127.0.0.1:16686")
    trace_url_template: str = Field(
        default="{jaeger_query_url}/trace/{trace_id}",
        description="Link of a reply's trace; {jaeger_query_url} and {trace_id} are filled in.",
    )
    reconnect_initial_ms: int = Field(default=500, gt=0)
    reconnect_max_ms: int = Field(default=10_000, gt=0)
    log_level: str = Field(default="INFO", validation_alias="OMNI_LOG_LEVEL")
    max_frame_bytes: int = Field(
        default=64 * 1024, description="No WebSocket here; the limit of any."
    )
