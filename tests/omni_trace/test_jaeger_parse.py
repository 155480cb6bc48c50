"""Parsing Jaeger's /api/v3 answers (recorded from a real run) and rendering trees."""

from __future__ import annotations

import json
from pathlib import Path

from omni_trace.traces.jaeger import parse_otlp
from omni_trace.traces.tracetree import render_tree
from otel.names import Attr, Event, LinkRole, Service, SpanName

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


def test_events_are_parsed_in_time_order_with_their_attributes() -> None:
    """A check's event carries its own attributes (OMNI2's `checks` span); Jaeger answers
    with a span's events in any order."""
    doc = {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": [{"key": "service.name", "value": {"stringValue": "omni2"}}]
                },
                "scopeSpans": [
                    {
                        "spans": [
                            {
                                "traceId": "415f2ef16c5f51ce46d8710d12141e9c",
                                "spanId": "70267548cd5fac97",
                                "name": SpanName.CHECKS,
                                "startTimeUnixNano": "10",
                                "endTimeUnixNano": "30",
                                "events": [
                                    {
                                        "timeUnixNano": "20",
                                        "name": Event.check("rate_limit"),
                                        "attributes": [
                                            {
                                                "key": Attr.CHECK_RESULT,
                                                "value": {"stringValue": "deny"},
                                            },
                                            {"key": Attr.LIMIT, "value": {"intValue": "3"}},
                                            {
                                                "key": Attr.CHECK_DURATION,
                                                "value": {"doubleValue": 1.5},
                                            },
                                        ],
                                    },
                                    {"timeUnixNano": "15", "name": Event.check("user")},
                                ],
                            }
                        ]
                    }
                ],
            }
        ]
    }
    (checks,) = parse_otlp(doc)
    assert checks.event_names == (Event.check("user"), Event.check("rate_limit"))
    event = checks.event(Event.check("rate_limit"))
    assert event is not None and event.time_ns == 20
    assert event.attributes == {Attr.CHECK_RESULT: "deny", Attr.LIMIT: 3, Attr.CHECK_DURATION: 1.5}
    assert checks.event(Event.check("usage")) is None
