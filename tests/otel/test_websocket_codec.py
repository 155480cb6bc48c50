"""The frame codec's fast path for token frames: derived from the codec's own description of
a stream frame (its kind key and stream kinds), for either of `json.dumps`'s separators."""

from __future__ import annotations

import json

import pytest

from otel.websocket import OMNI2, FrameCodec
from tests.whole_stack.origin.protocols import ACME

SEPARATORS = [(", ", ": "), (",", ":")]  # json.dumps's default, and compact (send_json's)


@pytest.mark.parametrize("codec", [OMNI2, ACME], ids=["omni2", "acme"])
@pytest.mark.parametrize("separators", SEPARATORS, ids=["default", "compact"])
def test_a_stream_frame_with_its_kind_first_takes_the_fast_path(
    codec: FrameCodec, separators: tuple[str, str]
) -> None:
    for kind in codec.streams:
        text = json.dumps({codec.kind_key: kind, "text": "a"}, separators=separators)
        assert codec.is_stream_text(text), text
        assert text.startswith(codec.stream_prefixes)


@pytest.mark.parametrize("codec", [OMNI2, ACME], ids=["omni2", "acme"])
def test_no_other_frame_takes_the_fast_path(codec: FrameCodec) -> None:
    others = [*sorted(codec.opens | codec.ends), "warning", "welcome"]
    for kind in others:
        assert not codec.is_stream_text(json.dumps({codec.kind_key: kind, "text": "a"}))
    for kind in codec.streams:
        # A longer kind that starts like a stream kind, and the kind under another key.
        assert not codec.is_stream_text(json.dumps({codec.kind_key: kind + "s", "text": "a"}))
        assert not codec.is_stream_text(json.dumps({codec.kind_key + "x": kind}))


def test_a_stream_frame_written_another_way_is_known_by_its_kind_only() -> None:
    """The fast path is only a shortcut: a token frame whose kind is not first misses it,
    and the codec still names its kind once it is parsed."""
    text = json.dumps({"text": "a", "type": "token"})
    assert not OMNI2.is_stream_text(text)
    assert OMNI2.kind(json.loads(text)) in OMNI2.streams
