from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class McpToolsSettings(BaseSettings):
    """Environment: MCP_TOOLS_HOST, MCP_TOOLS_PORT, MCP_TOOLS_SAMPLE_DB, ..."""

    model_config = SettingsConfigDict(env_prefix="MCP_TOOLS_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8765
    sample_db: Path = Field(
        default=Path("var/mcp-sample.db"),
        description="The sample database `database_query` reads (created when missing).",
    )
    max_rows: int = Field(default=50, gt=0, description="Rows one query returns at most.")
    log_level: str = Field(default="INFO", validation_alias="OMNI_LOG_LEVEL")
