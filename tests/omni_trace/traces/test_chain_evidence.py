"""What the audit may trust: clients that sent no trace context, lost client spans, spans
from the public path that are someone else's, and messages that entered past the dashboard,
on a recorded message trace changed the way each case changes it."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest

from omni_trace.traces import TraceSpan, analyze_chain, default_spec, parse_spec
from omni_trace.traces.chain import MISSING, NOT_TRACED, PRESENT, ChainReport
from omni_trace.traces.spec import SpecError
from otel.names import Attr, ClientContext, Entry
from tests.omni_trace.recorded import message_spans, session_spans

CLIENT_SPAN = "70267548cd5fac97"
RELAY_SPAN = "862c06d7e1e53deb"
PUBLIC = {"chat.telemetry.path": "public"}


def _changed(
    spans: list[TraceSpan], name: str, *, parent: str | bool | None = False, **attributes: Any
) -> list[TraceSpan]:
    """The spans with `name`'s attributes added (and its parent set, when given)."""

    def change(span: TraceSpan) -> TraceSpan:
        if span.name != name:
            return span
        fields: dict[str, Any] = {"attributes": span.attributes | attributes}
        if parent is not False:
            fields["parent_span_id"] = parent
        return dataclasses.replace(span, **fields)

    return [change(s) for s in spans]


def _without(spans: list[TraceSpan], keep: Callable[[TraceSpan], bool]) -> list[TraceSpan]:
    return [s for s in spans if keep(s)]


def _analyze(spans: list[TraceSpan], spec: Any = None) -> ChainReport:
    session = session_spans()
    return analyze_chain(spans, lambda _: session, spec)


def _no_client(context: str, sampled: bool | None = None, parent: str | None = None) -> list:  # type: ignore[type-arg]
    """The message of a client whose span is not in Jaeger, as the dashboard recorded it."""
    attributes: dict[str, Any] = {Attr.CLIENT_CONTEXT: context}
    if sampled is not None:
        attributes[Attr.CLIENT_SAMPLED] = sampled
    spans = _without(message_spans(), lambda s: s.service != "chat-client")
    return _changed(spans, "chat.relay", parent=parent, **attributes)


def test_a_client_that_sent_no_context_is_not_traced_and_the_chain_is_whole() -> None:
    report = _analyze(_no_client(ClientContext.NONE))
    assert not report.broken, report.problems
    assert report.layer_states == {
        "client": NOT_TRACED,
        "dashboard": PRESENT,
        "traefik": PRESENT,
        "omni2": PRESENT,
    }
    assert report.not_traced == ["client"] and report.first_layer == "dashboard"
    assert "chat.client.context=none" in report.not_traced_because["client"]
    relay = next(s for s in message_spans() if s.name == "chat.relay")
    # Hops are measured from the first layer traced: the whole wait is the dashboard's.
    assert report.hops["client_to_dashboard"] is None and report.hops["ttft_client"] is None
    assert report.hops["total"] == relay.duration_ms
    assert report.status == "ok (client not traced)" and (report.hop, report.cause) == (None, None)
    assert report.as_dict()["layer_states"]["client"] == "not traced"


@pytest.mark.parametrize("context", [ClientContext.MALFORMED, ClientContext.REUSED])
def test_context_the_first_hop_could_not_join_is_not_traced(context: str) -> None:
    report = _analyze(_no_client(context))
    assert not report.broken and report.not_traced == ["client"], report.problems


def test_a_client_that_says_it_kept_no_span_is_not_traced_and_not_an_orphan() -> None:
    # It sent `-00`: the dashboard continued its context (sampled: ours), no span arrives.
    report = _analyze(_no_client(ClientContext.CONTINUED, sampled=False, parent=CLIENT_SPAN))
    assert not report.broken, report.problems
    assert report.not_traced == ["client"]


def test_a_client_span_that_never_arrived_is_lost() -> None:
    report = _analyze(_no_client(ClientContext.CONTINUED, sampled=True, parent=CLIENT_SPAN))
    assert report.broken
    assert report.layer_states["client"] == MISSING
    assert "missing layer client (its span was lost)" in report.problems
    assert (report.hop, report.cause) == ("client -> dashboard", "client span lost")


def test_a_linked_client_span_that_never_arrived_is_lost() -> None:
    report = _analyze(_no_client(ClientContext.LINKED, sampled=True))
    assert report.broken and report.cause == "client span lost"


def test_the_strict_spec_requires_every_client_to_be_traced() -> None:
    strict = default_spec().requiring(["client"])
    report = _analyze(_no_client(ClientContext.NONE), strict)
    assert report.broken and report.layer_states["client"] == MISSING
    assert report.hop == "client"
    with pytest.raises(SpecError, match="no layer named browser"):
        default_spec().requiring(["browser"])


def _injected(**fields: Any) -> TraceSpan:
    client = next(s for s in message_spans() if s.service == "chat-client")
    base = {"span_id": "f0f0f0f0f0f0f0f0", "attributes": client.attributes | PUBLIC}
    return dataclasses.replace(client, **(base | fields))


def test_a_client_span_injected_into_someone_elses_trace_is_foreign() -> None:
    intruder = _injected(status="ERROR", status_message="forged failure")
    report = _analyze([intruder, *message_spans()])
    assert not report.broken and not report.errors, (report.problems, report.errors)
    assert report.layer_states["client"] == PRESENT
    assert report.foreign == ["chat-client chat.message f0f0f0f0f0f0f0f0"]
    # The client is the span the dashboard recorded as its parent, not the one listed first.
    assert (
        report.hops["client_to_dashboard"] is not None and report.hops["client_to_dashboard"] >= 0
    )


def test_a_public_span_that_takes_a_servers_span_id_is_foreign() -> None:
    twin = _injected(span_id=RELAY_SPAN, parent_span_id=CLIENT_SPAN)
    report = _analyze([*message_spans(), twin])
    assert not report.broken, report.problems
    assert report.foreign == [f"chat-client chat.message {RELAY_SPAN}"]


def test_server_spans_from_the_public_path_prove_no_server_layer() -> None:
    # A forged chain posted to the browsers' path: the collector stamped every span of it.
    forged = [dataclasses.replace(s, attributes=s.attributes | PUBLIC) for s in message_spans()]
    report = _analyze(forged)
    assert report.client_only and not report.broken
    assert report.layers == {"client": True, "dashboard": False, "traefik": False, "omni2": False}
    assert report.status.startswith("CLIENT ONLY")
    assert set(report.foreign) == {
        f"{s.service} {s.name} {s.span_id}" for s in forged if s.service != "chat-client"
    }


def test_a_link_to_a_public_span_proves_no_gateway() -> None:
    session = [
        dataclasses.replace(s, attributes=s.attributes | PUBLIC) if s.service == "traefik" else s
        for s in session_spans()
    ]
    report = analyze_chain(message_spans(), lambda _: session)
    assert report.broken and report.layer_states["traefik"] == MISSING
    assert any("public path" in p for p in report.problems), report.problems


def test_a_trace_only_a_client_recorded_is_its_word_alone() -> None:
    report = _analyze(_without(message_spans(), lambda s: s.service == "chat-client"))
    assert report.client_only and not report.broken
    assert (report.hop, report.cause) == (None, None)


def _entered(entry: str, *, gateway_link: bool) -> list[TraceSpan]:
    """A message of a client that reached OMNI2 without the dashboard: OMNI2 is its first
    hop, and records what the client's context was and how the connection came."""
    spans = _without(message_spans(), lambda s: s.service == "omni2")
    turn = next(s for s in spans if s.name == "chat.turn")
    links = turn.links if gateway_link else ()
    spans = [dataclasses.replace(s, links=links) if s is turn else s for s in spans]
    return _changed(
        spans,
        "chat.turn",
        parent=CLIENT_SPAN,
        **{
            Attr.ENTRY: entry,
            Attr.CLIENT_CONTEXT: ClientContext.CONTINUED,
            Attr.CLIENT_SAMPLED: False,
        },
    )


def test_a_message_straight_to_omni2_is_whole_from_omni2() -> None:
    report = _analyze(_entered(Entry.DIRECT, gateway_link=False))
    assert not report.broken, report.problems
    assert report.layer_states == {
        "client": NOT_TRACED,
        "dashboard": NOT_TRACED,
        "traefik": NOT_TRACED,
        "omni2": PRESENT,
    }
    assert report.first_layer == "omni2"


def test_a_message_through_the_gateways_public_entry_is_whole_from_traefik() -> None:
    report = _analyze(_entered(Entry.GATEWAY, gateway_link=True))
    assert not report.broken, report.problems
    assert report.layer_states["traefik"] == PRESENT
    assert report.not_traced == ["client", "dashboard"]


def test_through_the_gateway_the_gateway_link_is_still_required() -> None:
    report = _analyze(_entered(Entry.GATEWAY, gateway_link=False))
    assert report.broken and report.layer_states["traefik"] == MISSING


def test_without_a_witness_every_layer_is_expected() -> None:
    # Traces from before the first hop recorded anything: nothing changes for them.
    report = _analyze(_without(message_spans(), lambda s: s.service != "chat-client"))
    assert report.broken and report.layer_states["client"] == MISSING


@pytest.mark.parametrize(
    ("layers", "message"),
    [
        ([{"name": "a", "services": ["x"], "message": "m", "expected_when": {"k": "v"}}], "last"),
        (
            [
                {"name": "a", "services": ["x"], "message": "m", "expected_when": ["k"]},
                {"name": "b", "services": ["y"], "message": "n", "parent": "a"},
            ],
            "a mapping",
        ),
        (
            [
                {"name": "a", "services": ["x"], "message": "m", "expected_when": {"k": [{}]}},
                {"name": "b", "services": ["y"], "message": "n", "parent": "a"},
            ],
            "values are",
        ),
        ([{"name": "a", "services": ["x"], "message": "m", "public": "yes"}], "true or false"),
    ],
)
def test_bad_evidence_keys_are_refused_with_the_place(layers: list, message: str) -> None:  # type: ignore[type-arg]
    data = {"name": "x", "conversation_attribute": "c", "user_attribute": "u", "layers": layers}
    with pytest.raises(SpecError, match=message):
        parse_spec(data)


def test_a_client_span_in_the_trace_of_a_client_that_sent_no_context_is_foreign() -> None:
    intruder = _injected(span_id="f1f1f1f1f1f1f1f1")
    report = _analyze([intruder, *_no_client(ClientContext.NONE)])
    assert not report.broken and report.not_traced == ["client"], report.problems
    assert report.foreign == ["chat-client chat.message f1f1f1f1f1f1f1f1"]
