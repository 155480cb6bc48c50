from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.common.settings import MIN_SECRET_BYTES

MIN_AUTH_TOKEN_BYTES = MIN_SECRET_BYTES  # the same floor as every other secret
HOW_TO_MAKE_A_TOKEN = (
    "make one with: python -c 'import secrets; print(secrets.token_urlsafe(32))' "
    "(`omni-trace up` generates one per run)"
)


class McpToolsSettings(BaseSettings):
    """Environment: MCP_TOOLS_HOST, MCP_TOOLS_PORT, MCP_TOOLS_AUTH_TOKEN, ..."""

    # hide_input_in_errors: a validation error must not quote the environment (secrets).
    model_config = SettingsConfigDict(
        env_prefix="MCP_TOOLS_", extra="ignore", hide_input_in_errors=True
    )

    host: str = "127.0.0.1"
    port: int = 8765
    auth_token: SecretStr | None = Field(
        default=None,
        description="The credential only OMNI2 holds (OMNI2_MCP_AUTH_TOKEN there): every /mcp "
        f"request must send `Authorization: Bearer <it>`. At least {MIN_AUTH_TOKEN_BYTES} "
        "bytes; the HTTP server refuses to start without it.",
    )
    sample_db: Path = Field(
        default=Path("var/mcp-sample.db"),
        description="The sample database `database_query` reads (created when missing).",
    )
    max_rows: int = Field(default=50, gt=0, description="Rows one query returns at most.")
    max_result_bytes: int = Field(
        default=64 * 1024,
        ge=1024,
        description="A tool result's JSON at most (UTF-8): rows are dropped until it fits.",
    )
    max_value_bytes: int = Field(
        default=256 * 1024,
        ge=1024,
        description="SQLite's length limit (SQLITE_LIMIT_LENGTH) for any string, blob or row "
        "a query builds, and for the SQL text.",
    )
    query_timeout_s: float = Field(
        default=2.0, gt=0, description="A query is interrupted between SQLite steps after this."
    )
    call_timeout_s: float = Field(
        default=2.5,
        gt=0,
        description="A whole tool call answers with an error after this, even when one SQLite "
        "step (a single function call) does not return.",
    )
    max_running_queries: int = Field(
        default=4,
        gt=0,
        description="Queries running at once, abandoned ones included; more are refused.",
    )
    log_level: str = Field(default="INFO", validation_alias="OMNI_LOG_LEVEL")

    def required_auth_token(self) -> str:
        """The credential, checked here rather than by a pydantic validator, whose error
        message would quote the rejected value."""
        token = self.auth_token.get_secret_value() if self.auth_token else ""
        if not token:
            raise MissingCredential(
                "MCP_TOOLS_AUTH_TOKEN is not set: the MCP tool server answers only OMNI2, "
                "which must send it as a bearer token; " + HOW_TO_MAKE_A_TOKEN
            )
        if len(token.encode()) < MIN_AUTH_TOKEN_BYTES:
            raise MissingCredential(
                f"MCP_TOOLS_AUTH_TOKEN must be at least {MIN_AUTH_TOKEN_BYTES} bytes; "
                + HOW_TO_MAKE_A_TOKEN
            )
        return token


class MissingCredential(ValueError):
    """The server cannot start: no credential, or one too short to be secret."""
