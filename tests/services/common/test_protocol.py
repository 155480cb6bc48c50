from __future__ import annotations

import json

import pytest

from services.common.protocol import (
    MAX_TEXT_CHARS,
    ClientMessage,
    ClientPing,
    FrameError,
    close_reason,
    done_frame,
    parse_client_frame,
)


def test_message_frame() -> None:
    frame = parse_client_frame(json.dumps({"type": "message", "text": "hi", "trace": {"a": 1}}))
    assert isinstance(frame, ClientMessage)
    assert frame.text == "hi"
    assert frame.trace == {"a": 1}


def test_ping() -> None:
    assert isinstance(parse_client_frame('{"type": "ping"}'), ClientPing)


@pytest.mark.parametrize(
    ("text", "error_type"),
    [
        (None, "binary_frame"),
        ("not json", "invalid_json"),
        ("[1, 2]", "invalid_frame"),
        ('{"type": "nope"}', "unknown_type"),
        ('{"text": "no type"}', "unknown_type"),
        ('{"type": "message"}', "missing_text"),
        ('{"type": "message", "text": "   "}', "missing_text"),
        ('{"type": "message", "text": 5}', "missing_text"),
        (json.dumps({"type": "message", "text": "x" * (MAX_TEXT_CHARS + 1)}), "text_too_long"),
        # Nesting too deep for the parser is invalid JSON, not a RecursionError.
        ("[" * 10_000, "invalid_json"),
        (
            '{"type": "message", "text": "hi", "trace": ' + "[" * 10_000 + "]" * 10_000 + "}",
            "invalid_json",
        ),
    ],
)
def test_malformed_frames(text: str | None, error_type: str) -> None:
    with pytest.raises(FrameError) as err:
        parse_client_frame(text, b"\x00" if text is None else None)
    assert err.value.error_type == error_type
    assert str(err.value)


def test_close_reason_fits_a_close_frame() -> None:
    assert len(close_reason("é" * 200).encode()) <= 123


def test_done_frame_is_backward_compatible() -> None:
    frame = done_frame({"tokens_used": 3, "tools_used": [], "tool_calls": 0}, "ab" * 16)
    assert frame["type"] == "done"
    assert frame["result"]["tokens_used"] == 3
    assert frame["trace_id"] == frame["result"]["trace_id"] == "ab" * 16


def test_warning_and_blocked_frames() -> None:
    from services.common.protocol import blocked_frame, warning_frame

    assert warning_frame("close to your limit") == {
        "type": "warning",
        "warning": "close to your limit",
        "code": "usage_warning",
    }
    assert blocked_frame("user blocked: spam", "ab" * 16) == {
        "type": "blocked",
        "error": "user blocked: spam",
        "code": "user_blocked",
        "trace_id": "ab" * 16,
    }
