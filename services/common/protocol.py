"""The chat frame protocol of the seed, and the close codes every layer uses.

Client -> server: `{"type": "message", "text": "...", "trace"?: {"traceparent": ...}}`,
`{"type": "ping"}`. Server -> client: `welcome`, `token`, `done`, `error`, `pong`, and
`warning` (close to a limit) and `blocked` (the user was blocked; the connection then closes).
Extra keys (conversation_id, user_id, trace_id) keep the seed's frames backward compatible.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

MAX_TEXT_CHARS = 16_000
MAX_REASON_BYTES = 123  # RFC 6455: a close frame's reason fits in 123 bytes


class CloseCode(IntEnum):
    """Application close codes (4xxx) so a refusal always reaches the client with a reason."""

    NORMAL = 1000
    GOING_AWAY = 1001
    POLICY_VIOLATION = 1008  # the client kept sending frames faster than allowed
    MESSAGE_TOO_BIG = 1009  # a frame over the size limit
    INTERNAL_ERROR = 1011
    BAD_REQUEST = 4400
    UNAUTHENTICATED = 4401  # token missing, invalid or expired (also mid-connection)
    FORBIDDEN = 4403  # origin not allowed, not through the gateway, or account inactive
    USER_UNKNOWN = 4404  # a valid token for a user OMNI2 does not know
    USER_BLOCKED = 4423  # the user is blocked (reason in the close frame / `blocked` frame)
    TOO_MANY_CONNECTIONS = 4429  # the user has as many open connections as allowed
    GATEWAY_UNREACHABLE = 4502  # Traefik or the backend behind it cannot be reached
    GATEWAY_TIMEOUT = 4504  # the upstream handshake timed out


class Refusal(Exception):
    """A connection refused with a close code and a reason for the client (refusal.py sends
    it); here, apart from any web framework, so the relay's pieces work without one."""

    def __init__(self, code: CloseCode, reason: str, error_type: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.error_type = error_type


@dataclass(frozen=True)
class CloseMeaning:
    """What a close code tells the client and the tools that diagnose a broken chain."""

    final: bool  # trying again fails the same way: the page stops and returns to login
    hop: str  # where the chain stops, in `omni-trace doctor`'s words
    label: str  # shown to the user before the reason


# The one table of close codes; frontend/src/names.ts mirrors it (a test keeps them equal).
CLOSE_MEANINGS: dict[int, CloseMeaning] = {
    CloseCode.NORMAL: CloseMeaning(False, "server", "connection closed by the server"),
    CloseCode.GOING_AWAY: CloseMeaning(False, "server", "server unavailable"),
    CloseCode.POLICY_VIOLATION: CloseMeaning(True, "client -> dashboard", "too many frames"),
    CloseCode.MESSAGE_TOO_BIG: CloseMeaning(True, "client -> dashboard", "frame too large"),
    CloseCode.INTERNAL_ERROR: CloseMeaning(False, "omni2", "server unavailable"),
    CloseCode.BAD_REQUEST: CloseMeaning(True, "client -> dashboard", "request refused"),
    CloseCode.UNAUTHENTICATED: CloseMeaning(True, "traefik -> auth", "authentication failed"),
    CloseCode.FORBIDDEN: CloseMeaning(True, "omni2", "access denied"),
    CloseCode.USER_UNKNOWN: CloseMeaning(True, "omni2", "unknown user"),
    CloseCode.USER_BLOCKED: CloseMeaning(True, "omni2", "user blocked"),
    CloseCode.TOO_MANY_CONNECTIONS: CloseMeaning(True, "omni2", "too many connections"),
    CloseCode.GATEWAY_UNREACHABLE: CloseMeaning(
        False, "dashboard -> traefik", "server unavailable"
    ),
    CloseCode.GATEWAY_TIMEOUT: CloseMeaning(False, "dashboard -> traefik", "server unavailable"),
}


# Server frames that end a message (its answer, its refusal, or the user being blocked), and
# those of them that mean it failed. The client and the dashboard's relay both end spans on them.
FINAL_FRAMES = frozenset({"done", "error", "blocked"})
FAILED_FRAMES = frozenset({"error", "blocked"})


def close_reason(text: str) -> str:
    """Trim a reason to what a close frame can carry (UTF-8 safe)."""
    data = text.encode()[:MAX_REASON_BYTES]
    return data.decode(errors="ignore")


class FrameError(ValueError):
    """A client frame that cannot be handled; the message goes into an `error` frame."""

    def __init__(self, message: str, error_type: str) -> None:
        super().__init__(message)
        self.error_type = error_type


@dataclass(frozen=True)
class ClientMessage:
    text: str
    trace: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ClientPing:
    pass


ClientFrame = ClientMessage | ClientPing


def load_json(text: str) -> Any:
    """`json.loads` for client input: nesting too deep for the parser (`[[[[...`) is invalid
    JSON like any other, not a RecursionError that escapes every `except ValueError`."""
    try:
        return json.loads(text)
    except RecursionError as err:
        raise ValueError("JSON nested too deeply") from err


def json_object(text: str) -> dict[str, Any] | None:
    """The JSON object in `text`, or None when it is not one (never raises)."""
    try:
        value = load_json(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def parse_client_frame(text: str | None, data: bytes | None = None) -> ClientFrame:
    """Validate one client frame; raises FrameError with a reason for the client."""
    if text is None:
        raise FrameError("binary frames are not supported; send JSON text frames", "binary_frame")
    try:
        frame = load_json(text)
    except ValueError as err:
        raise FrameError("frame is not valid JSON", "invalid_json") from err
    if not isinstance(frame, dict):
        raise FrameError("frame must be a JSON object", "invalid_frame")
    kind = frame.get("type")
    if kind == "ping":
        return ClientPing()
    if kind != "message":
        raise FrameError(f"unknown frame type {str(kind)[:40]!r}", "unknown_type")
    body = frame.get("text")
    if not isinstance(body, str) or not body.strip():
        raise FrameError("message frame needs a non-empty 'text' string", "missing_text")
    if len(body) > MAX_TEXT_CHARS:
        raise FrameError(f"message text exceeds {MAX_TEXT_CHARS} characters", "text_too_long")
    trace = frame.get("trace")
    return ClientMessage(text=body, trace=trace if isinstance(trace, dict) else {}, raw=frame)


def welcome_frame(conversation_id: str, user_id: str) -> dict[str, Any]:
    return {
        "type": "welcome",
        "text": "Welcome! I'm OMNI2 Assistant. Ask me anything.",
        "conversation_id": conversation_id,
        "user_id": user_id,
    }


def token_frame(text: str) -> dict[str, Any]:
    return {"type": "token", "text": text}


def done_frame(result: dict[str, Any], trace_id: str) -> dict[str, Any]:
    return {"type": "done", "result": result | {"trace_id": trace_id}, "trace_id": trace_id}


def error_frame(
    message: str, trace_id: str | None = None, code: str | None = None
) -> dict[str, Any]:
    frame: dict[str, Any] = {"type": "error", "error": message}
    if code:
        frame["code"] = code
    if trace_id:
        frame["trace_id"] = trace_id
    return frame


def warning_frame(message: str, code: str = "usage_warning") -> dict[str, Any]:
    return {"type": "warning", "warning": message, "code": code}


def blocked_frame(reason: str, trace_id: str | None = None) -> dict[str, Any]:
    frame: dict[str, Any] = {"type": "blocked", "error": reason, "code": "user_blocked"}
    if trace_id:
        frame["trace_id"] = trace_id
    return frame
