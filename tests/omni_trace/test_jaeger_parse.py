"""Parsing Jaeger's /api/v3 answers (recorded from a real run) and rendering trees."""

from __future__ import annotations

import json
from pathlib import Path

from omni_trace.traces.jaeger import parse_otlp
from omni_trace.traces.tracetree import render_tree
from otel.names import Attr, LinkRole, Service, SpanName

DATA = Path(__file__).parent / "data"


def load(name: str) -> dict:  # type: ignore[type-arg]
    return json.loads((DATA / name).read_text())["result"]


def test_message_trace_parses_parents_links_and_values() -> None:
    spans = parse_otlp(load("message_trace.json"))
    by_name = {s.name: s for s in spans}
    message, relay, turn = (by_name[n] for n in (SpanName.MESSAGE, SpanName.RELAY, SpanName.TURN))
    assert message.service == Service.CHAT_CLIENT and message.kind == "CLIENT"
    assert relay.parent_span_id == message.span_id
    assert turn.parent_span_id == relay.span_id
    assert len(message.trace_id) == 32 and len(message.span_id) == 16
    assert isinstance(message.attributes[Attr.MESSAGE_CHARS], int)
    assert message.event_names == ("first_token",)
    (link,) = relay.links
    assert link.attributes[Attr.LINK_ROLE] == LinkRole.UPSTREAM_CONNECT
    assert not any(k.startswith("@jaeger@") for s in spans for k in s.attributes)
    assert message.duration_ms > 0


def test_tree_shows_nesting_links_and_orphans() -> None:
    spans = parse_otlp(load("message_trace.json"))
    text = render_tree(spans)
    lines = text.splitlines()
    assert lines[0].startswith("trace ")
    indent = {SpanName.MESSAGE: 0, SpanName.RELAY: 0, SpanName.TURN: 0}
    for line in lines:
        for name in indent:
            if f" {name} " in line:
                indent[name] = len(line) - len(line.lstrip())
    assert indent[SpanName.MESSAGE] < indent[SpanName.RELAY] < indent[SpanName.TURN]
    assert "~> upstream-connect" in text and "~> gateway" in text

    orphaned = [s for s in spans if s.name != SpanName.RELAY]
    assert "not in trace" in render_tree(orphaned)


def test_session_trace_has_every_layer() -> None:
    spans = parse_otlp(load("session_trace.json"))
    assert {s.service for s in spans} >= {
        Service.CHAT_CLIENT,
        Service.DASHBOARD,
        Service.TRAEFIK,
        Service.AUTH,
        Service.OMNI2,
    }
