"""Parsing Jaeger's /api/v3 answers (recorded from a real run) and rendering trees."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from omni_trace.traces.jaeger import (
    FoundTraces,
    JaegerClient,
    TraceSpan,
    parse_otlp,
    parse_otlp_answer,
    parse_otlp_documents,
)
from omni_trace.traces.tracetree import render_tree
from otel.names import Attr, Event, LinkRole, Service, SpanName

DATA = Path(__file__).parents[1] / "data"  # tests/omni_trace/data, shared with recorded.py


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


# A v3 search's answer as Jaeger's gateway writes it: each trace's resourceSpans elements one
# after another in one compact document.
RECORDED_ID = "415f2ef16c5f51ce46d8710d12141e9c"


def search_answer(count: int, *, indent: int | None = None, documents: int = 1) -> bytes:
    """`count` copies of the recorded message trace (ids 1, 2, ...), split over `documents`
    documents one after another, as the v3 API may stream them."""
    raw = (DATA / "message_trace.json").read_text()
    elements = [
        element
        for n in range(1, count + 1)
        for element in json.loads(raw.replace(RECORDED_ID, f"{n:032x}"))["result"]["resourceSpans"]
    ]
    size = -(-len(elements) // documents)
    separators = (",", ":") if indent is None else None
    return "\n".join(
        json.dumps(
            {"result": {"resourceSpans": elements[i : i + size]}},
            indent=indent,
            separators=separators,
        )
        for i in range(0, len(elements), size)
    ).encode()


def trace_id(n: int) -> str:
    return f"{n:032x}"


def expected(n: int) -> list[TraceSpan]:
    return parse_otlp(
        json.loads((DATA / "message_trace.json").read_text().replace(RECORDED_ID, trace_id(n)))[
            "result"
        ]
    )


def test_a_search_answer_parses_to_each_trace_as_read_by_id() -> None:
    body = search_answer(5)
    asked: list[str] = []
    found = parse_otlp_answer(body, lambda t: asked.append(t) is None)
    assert found.trace_ids == asked == [trace_id(n) for n in range(1, 6)]
    assert found.traces == {trace_id(n): expected(n) for n in range(1, 6)}
    # The session trace the relay links to is a link, not a trace of the answer.
    assert expected(1)[1].links and expected(1)[1].links[0].trace_id not in found.trace_ids


def test_only_the_wanted_traces_are_decoded() -> None:
    # Trace 2's elements are made undecodable: skipped, they are never decoded.
    body = search_answer(3)
    start = body.index(f'"traceId":"{trace_id(2)}"'.encode())
    broken = (
        body[:start] + b'"traceId":"' + trace_id(2).encode() + b'",' + b"@@" + (body[start + 46 :])
    )
    found = parse_otlp_answer(broken, lambda t: t != trace_id(2))
    assert found.trace_ids == [trace_id(n) for n in (1, 2, 3)]
    assert found.traces == {trace_id(1): expected(1), trace_id(3): expected(3)}
    with pytest.raises(ValueError):
        parse_otlp_answer(broken)


def test_answers_in_several_documents_or_laid_out_otherwise_parse_alike() -> None:
    wanted = {trace_id(2), trace_id(4)}
    want = {t: expected(int(t, 16)) for t in sorted(wanted)}
    for body in (
        search_answer(4),
        search_answer(4, documents=3),
        search_answer(4, documents=12),  # one element each
        search_answer(4, indent=1),  # not the gateway's layout: decoded in full
    ):
        found = parse_otlp_answer(body, wanted.__contains__)
        assert found.trace_ids == [trace_id(n) for n in range(1, 5)]
        assert found.traces == want
        assert parse_otlp_documents(body, wanted.__contains__) == found


def test_the_v3_search_is_asked_with_its_own_parameters() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if len(seen) == 1:
            return httpx.Response(200, content=search_answer(2))
        return httpx.Response(404, json={"error": {"httpCode": 404, "message": "No traces found"}})

    jaeger = JaegerClient("http://jaeger:16686")
    jaeger._http = httpx.Client(transport=httpx.MockTransport(answer))
    start_us = 1_700_000_000_000_001
    found = jaeger.find_traces(
        "omni2",
        "chat.turn",
        start_us=start_us,
        end_us=start_us + 15_000_000,
        min_duration_us=15_000_000,
        limit=500,
    )
    assert found.traces == {trace_id(n): expected(n) for n in (1, 2)}
    params = seen[0].url.params
    assert seen[0].url.path == "/api/v3/traces"
    assert params["query.service_name"] == "omni2"
    assert params["query.operation_name"] == "chat.turn"
    assert params["query.start_time_min"] == "2023-11-14T22:13:20.000001Z"
    assert params["query.start_time_max"] == "2023-11-14T22:13:35.000001Z"
    assert params["query.duration_min"] == "15000000us"
    assert params["query.num_traces"] == params["query.search_depth"] == "500"
    assert jaeger.find_traces("omni2", start_us=0, end_us=1) == FoundTraces([], {})
    assert "query.operation_name" not in seen[1].url.params
    assert "query.duration_min" not in seen[1].url.params
