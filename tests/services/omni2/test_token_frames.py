"""What OMNI2 sends of a stream, as the text on the wire, against the frame codec the
dashboard's relay and the tracing middleware read it with: every token frame takes the
codec's fast path (its first bytes, no parse) and no other frame does. A change to how OMNI2
writes its frames (separators, key order) fails here instead of quietly costing a JSON parse
per token frame at every hop."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from fastapi.testclient import TestClient

from otel.websocket import OMNI2
from tests.services.omni2.conftest import gateway_headers


def _raw_turn(ws: Any, text: str) -> list[str]:
    """One message's frames, as sent, up to the one that ends it (at most 500)."""
    ws.send_json({"type": "message", "text": text})
    frames: list[str] = []
    for _ in range(500):
        frames.append(ws.receive_text())
        if OMNI2.kind(json.loads(frames[-1])) in OMNI2.ends:
            return frames
    raise AssertionError(f"no ending frame in {len(frames)} frames")


def test_every_token_frame_omni2_sends_takes_the_codecs_fast_path(
    make_client: Callable[..., TestClient],
) -> None:
    client = make_client()
    with client.websocket_connect("/ws/chat", headers=gateway_headers()) as ws:
        frames = [ws.receive_text()]  # the welcome
        for text in ("hello there", "list the tables"):
            frames += _raw_turn(ws, text)

    streamed = [f for f in frames if OMNI2.kind(json.loads(f)) in OMNI2.streams]
    others = [f for f in frames if f not in streamed]
    assert len(streamed) >= 2, frames
    assert [f for f in streamed if not OMNI2.is_stream_text(f)] == []
    assert [f for f in others if OMNI2.is_stream_text(f)] == []
    assert any(OMNI2.kind(json.loads(f)) in OMNI2.ends for f in others)
