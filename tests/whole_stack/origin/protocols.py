"""The two frame protocols the origin-style stack speaks: OMNI2's (the default codec) and
another team's, whose codec is the few lines below."""

from __future__ import annotations

from typing import Any

from otel.websocket import OMNI2, FrameCodec

ACME = FrameCodec(
    kind_key="op",
    opens={"ask"},
    streams={"chunk"},
    ends={"end", "fail"},
    fails={"fail"},
    trace_path=("meta", "trace"),
    conversation_path=("session", "conversation"),
    reply_trace_path=("meta", "trace_id"),
    error_text_path=("why",),
)


def codec_of(protocol: str) -> dict[str, Any]:
    """The instrumentation options of a protocol: its codec (and acme's span names)."""
    if protocol == "acme":
        return {"codec": ACME, "message_span": "acme.message"}
    return {"codec": OMNI2}
