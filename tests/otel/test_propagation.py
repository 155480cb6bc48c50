from __future__ import annotations

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from otel.names import Attr, LinkRole
from otel.propagation import (
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
