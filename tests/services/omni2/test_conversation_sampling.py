"""OMNI2 records each conversation's tail-sampling decision (docs/sampling.md) on its
`chat.connect` (the session trace, for the audit) and each `chat.turn` (the message trace, for
the ingesters), as the hash of the conversation id says; without a ratio it records none."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel.names import Attr, SpanName
from otel.sampling import conversation_keep
from tests.services.omni2.conftest import converse, gateway_headers


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    # Which spans carry an attribute does not depend on the database: SQLite only.
    return f"sqlite+aiosqlite:///{tmp_path / 'omni2.db'}"


def _chat(client: TestClient) -> tuple[str, str]:
    """One connection with one answered message: (conversation id, the turn's trace id)."""
    with client.websocket_connect("/ws/chat", headers=gateway_headers("alice")) as ws:
        welcome = ws.receive_json()
        _, frames = converse(ws, "hello")
    assert frames[-1]["type"] == "done", frames
    return welcome["conversation_id"], frames[-1]["trace_id"]


def _named(spans: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [s for s in spans.get_finished_spans() if s.name == name]


@pytest.mark.parametrize("ratio", [0.0, 0.5, 1.0])
def test_connect_and_turn_carry_the_conversations_decision(
    make_client: Callable[..., TestClient], spans: InMemorySpanExporter, ratio: float
) -> None:
    client = make_client(conversation_sample_ratio=ratio)
    decisions = set()
    for _ in range(6):  # at 0.5, both sides of the hash, most likely
        spans.clear()
        conversation, trace_id = _chat(client)
        keep = conversation_keep(conversation, ratio)
        decisions.add(keep)
        (connect,) = _named(spans, SpanName.CONNECT)
        (turn,) = _named(spans, SpanName.TURN)
        assert f"{turn.context.trace_id:032x}" == trace_id
        for span in (connect, turn):
            assert span.attributes is not None
            assert span.attributes[Attr.CONVERSATION_ID] == conversation
            assert span.attributes[Attr.SAMPLE_KEEP] is keep, span.name
    # The ratio's ends decide alike for every conversation.
    if ratio in (0.0, 1.0):
        assert decisions == {ratio == 1.0}


def test_no_ratio_no_decision(
    make_client: Callable[..., TestClient], spans: InMemorySpanExporter
) -> None:
    _chat(make_client())
    recorded = [s for s in spans.get_finished_spans() if Attr.SAMPLE_KEEP in (s.attributes or {})]
    assert recorded == [], [s.name for s in recorded]
