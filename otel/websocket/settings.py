"""The instrumentors' settings from the environment, so a service's one call needs no code
change to be tuned: `OMNI_TRACE_WS_SAMPLE_RATIO`, `OMNI_TRACE_WS_CLIENT_TRACE`,
`OMNI_TRACE_WS_PATHS` (a JSON list), `OMNI_TRACE_WS_MESSAGE_SPAN`,
`OMNI_TRACE_WS_MAX_FRAME_CHARS`. Keyword options of `instrument_chat_server` win."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict


class ChatTracingSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="OMNI_TRACE_WS_", extra="ignore")

    sample_ratio: float = Field(
        default=1.0, ge=0, le=1, description="Share of connections traced (first hop only)."
    )
    client_trace: Literal["continue", "link"] = Field(
        default="continue",
        description="continue: the client's context roots the message trace; link: each "
        "message starts its own trace and links to the client's span.",
    )
    paths: tuple[str, ...] = Field(
        default=("/ws/chat",), min_length=1, description="The WebSocket paths traced."
    )
    message_span: str | None = Field(
        default=None, min_length=1, max_length=128, description="The message spans' name."
    )
    max_frame_chars: int = Field(
        default=64 * 1024, ge=1024, description="Larger frames pass on without being read."
    )

    def options(self) -> dict[str, Any]:
        """The middleware's options these settings set."""
        return {k: v for k, v in self.model_dump().items() if v is not None}


def settings_from_environment() -> ChatTracingSettings:
    """The settings, or ValueError naming each bad variable (a service refuses to start)."""
    try:
        return ChatTracingSettings()
    except ValidationError as err:
        problems = "; ".join(
            f"OMNI_TRACE_WS_{'_'.join(str(p) for p in e['loc']).upper()}: {e['msg']}"
            for e in err.errors()
        )
        raise ValueError(f"invalid WebSocket tracing settings: {problems}") from None
