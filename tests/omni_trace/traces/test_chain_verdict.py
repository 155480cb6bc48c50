"""The chain analysis' last step: where a chain broke, or where a whole chain's message failed,
on recorded traces read by another stack's spec."""

from __future__ import annotations

import dataclasses

from omni_trace.traces import SpanLink, TraceSpan, analyze_chain, parse_spec
from tests.omni_trace.recorded import message_spans, session_spans
from tests.omni_trace.traces.test_spec import OTHER_SPEC, _renamed


def _analyze(spans=None, session=None, spec=OTHER_SPEC):  # type: ignore[no-untyped-def]
    spans = _renamed(message_spans()) if spans is None else spans
    session = _renamed(session_spans()) if session is None else session
    return analyze_chain(spans, lambda _: session, parse_spec(spec))


def test_a_whole_chain_has_no_verdict() -> None:
    report = _analyze()
    assert (report.hop, report.cause) == (None, None)


def test_a_missing_layer_breaks_the_hop_into_it() -> None:
    spans = [s for s in _renamed(message_spans()) if s.service != "llm-api"]
    report = _analyze(spans)
    assert report.hop == "proxy -> backend"
    assert report.cause == "no answer span from llm-api"


def test_a_gateway_not_proven_breaks_between_its_neighbours() -> None:
    report = _analyze(session=[])
    assert report.hop == "proxy -> gateway -> backend"
    assert report.cause == "missing layer gateway (linked span not in Jaeger yet)"


def test_a_failed_message_is_placed_at_its_deepest_error() -> None:
    def failed(span):  # type: ignore[no-untyped-def]
        if (span.service, span.name) in {("llm-api", "answer"), ("llm-api", "llm.call")}:
            message = "boom" if span.name == "llm.call" else "the model failed"
            return dataclasses.replace(span, status="ERROR", status_message=message)
        return span

    report = _analyze([failed(s) for s in _renamed(message_spans())])
    assert not report.broken and len(report.errors) == 2
    assert (report.hop, report.cause) == ("backend", "llm-api llm.call: boom")
    assert report.as_dict()["hop"] == "backend"


def _roles_dropped(spans: list[TraceSpan]) -> list[TraceSpan]:
    """As Jaeger's Badger, Cassandra and Elasticsearch stores return links: no attributes."""
    return [
        dataclasses.replace(s, links=tuple(SpanLink(lk.trace_id, lk.span_id, {}) for lk in s.links))
        for s in spans
    ]


def test_links_without_their_roles_are_matched_by_their_targets() -> None:
    spans, session = _roles_dropped(message_spans()), session_spans()
    assert all(not lk.attributes for s in spans for lk in s.links) and any(s.links for s in spans)
    report = analyze_chain(spans, lambda _: session)
    assert not report.broken, report.problems
    assert report.layers == {"client": True, "dashboard": True, "traefik": True, "omni2": True}


def test_a_roleless_link_to_the_wrong_span_is_still_missing() -> None:
    session = session_spans()
    upstream = next(s for s in session if s.name == "upstream connect")
    spans = [
        dataclasses.replace(s, links=(SpanLink(upstream.trace_id, upstream.span_id, {}),))
        if s.name == "chat.turn"
        else s
        for s in _roles_dropped(message_spans())
    ]
    report = analyze_chain(spans, lambda _: session)
    assert report.problems == ["missing link chat.turn -> traefik (did not come through it?)"]
    assert report.hop == "dashboard -> traefik -> omni2"
