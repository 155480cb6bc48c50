from __future__ import annotations

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from otel.names import Attr, ClientContext, LinkRole
from otel.propagation import (
    TraceIds,
    client_parent,
    extract_frame,
    extract_untrusted,
    gateway_links,
    inject_frame,
    remote_span_context,
    w3c_carrier,
)

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT = f"00-{TRACE_ID}-b7ad6b7169203331-01"


def test_valid_traceparent_is_continued() -> None:
    ctx = remote_span_context(extract_untrusted({"traceparent": PARENT}))
    assert ctx is not None
    assert f"{ctx.trace_id:032x}" == TRACE_ID
    assert ctx.is_remote


@pytest.mark.parametrize(
    "carrier",
    [
        {"traceparent": "garbage"},
        {"traceparent": "00-" + "0" * 32 + "-b7ad6b7169203331-01"},  # all-zero trace id
        {"traceparent": PARENT + "x" * 100},  # oversize
        {"traceparent": 42},
        {},
        None,
        "not a mapping",
    ],
)
def test_malformed_context_starts_fresh(carrier: object) -> None:
    assert remote_span_context(extract_untrusted(carrier)) is None  # type: ignore[arg-type]


def test_baggage_from_clients_is_ignored() -> None:
    from opentelemetry import baggage

    ctx = extract_untrusted({"traceparent": PARENT, "baggage": "user.id=admin"})
    assert baggage.get_all(ctx) == {}


def test_frame_round_trip_rewrites_parent() -> None:
    tracer = trace.get_tracer("t")
    frame: dict[str, object] = {"type": "message", "text": "hi", "trace": {"traceparent": PARENT}}
    parent = extract_frame(frame)
    with tracer.start_as_current_span("relay", context=parent) as span:
        inject_frame(frame, span)
    child = remote_span_context(extract_frame(frame))
    assert child is not None
    assert f"{child.trace_id:032x}" == TRACE_ID
    assert child.span_id == span.get_span_context().span_id


def test_w3c_carrier_has_traceparent_only_for_valid_span() -> None:
    with trace.get_tracer("t").start_as_current_span("s") as span:
        assert w3c_carrier(span)["traceparent"].startswith("00-")
    assert w3c_carrier(trace.INVALID_SPAN) == {}


def test_client_flags_and_tracestate_are_not_kept() -> None:
    ctx = extract_untrusted(
        {"traceparent": f"00-{TRACE_ID}-b7ad6b7169203331-00", "tracestate": "ot=th:0"}
    )
    span_context = remote_span_context(ctx)
    assert span_context is not None
    assert span_context.trace_flags.sampled  # `-00` does not switch tracing off
    assert len(span_context.trace_state) == 0


def test_a_gateway_in_front_is_linked_not_trusted() -> None:
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("gateway") as gateway:
        headers = {"traceparent": w3c_carrier(gateway)["traceparent"]}
    (link,) = gateway_links(headers)
    assert link.context.span_id == gateway.get_span_context().span_id
    assert link.attributes == {Attr.LINK_ROLE: LinkRole.FRONT_GATEWAY}
    assert gateway_links({}) == []
    assert gateway_links({"traceparent": "00-not-a-trace-01"}) == []


UNSAMPLED = f"00-{TRACE_ID}-b7ad6b7169203331-00"


@pytest.mark.parametrize(
    ("carrier", "state", "sampled"),
    [
        (None, ClientContext.NONE, None),
        ({}, ClientContext.NONE, None),
        ({"tracestate": "x=1"}, ClientContext.NONE, None),
        ({"traceparent": "garbage"}, ClientContext.MALFORMED, None),
        ({"traceparent": 42}, ClientContext.MALFORMED, None),
        ({"traceparent": PARENT + "x" * 100}, ClientContext.MALFORMED, None),
        ({"traceparent": PARENT}, ClientContext.CONTINUED, True),
        ({"traceparent": UNSAMPLED}, ClientContext.CONTINUED, False),
    ],
)
def test_what_the_client_sent_is_recorded(
    carrier: dict[str, object] | None, state: str, sampled: bool | None
) -> None:
    parent = client_parent(carrier, keep=True, link=False)
    assert parent.attributes.get(Attr.CLIENT_CONTEXT) == state
    assert parent.attributes.get(Attr.CLIENT_SAMPLED) == sampled
    # The client's flag is recorded, never obeyed: its span is continued as sampled.
    if parent.client is not None:
        assert parent.client.trace_flags.sampled


def test_linked_context_is_recorded_as_linked() -> None:
    parent = client_parent({"traceparent": UNSAMPLED}, keep=True, link=True)
    assert parent.client is None and len(parent.links) == 1
    assert parent.attributes == {
        Attr.CLIENT_CONTEXT: ClientContext.LINKED,
        Attr.CLIENT_SAMPLED: False,
    }


def test_a_trace_id_used_before_is_not_joined() -> None:
    trace_ids = TraceIds()
    first = client_parent({"traceparent": PARENT}, keep=True, link=False, trace_ids=trace_ids)
    assert first.client is not None and f"{first.client.trace_id:032x}" == TRACE_ID
    # Another connection (or message) naming the same trace, even through another span id,
    # in either mode: a trace of its own, joined to nothing.
    other_span = f"00-{TRACE_ID}-{'1' * 16}-01"
    for link in (False, True):
        again = client_parent(
            {"traceparent": other_span}, keep=True, link=link, trace_ids=trace_ids
        )
        assert again.client is None and again.links == []
        assert again.attributes == {Attr.CLIENT_CONTEXT: ClientContext.REUSED}


def test_trace_ids_are_bounded() -> None:
    trace_ids = TraceIds(capacity=2)
    assert trace_ids.first_use(1) and trace_ids.first_use(2) and not trace_ids.first_use(2)
    assert trace_ids.first_use(3)  # forgets 1, the oldest
    assert trace_ids.first_use(1)
