"""Streaming per hop: each layer's stream stats read from its message span, and the verdict
of the hop that held the tokens, on a recorded trace with hand-set stats."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from omni_trace.traces import streams
from omni_trace.traces.audit import render_json, render_stalls, render_table
from omni_trace.traces.chain import ChainReport, analyze_chain
from omni_trace.traces.jaeger import TraceSpan
from omni_trace.traces.streams import LayerStream, judge_stall, render_streams
from otel.names import Attr
from tests.omni_trace.recorded import message_spans, session_spans

SPAN_OF = {"client": "chat.message", "dashboard": "chat.relay", "omni2": "chat.turn"}


def stats(max_ms: float, at_ms: float = 2300.0, p50: float = 10.0) -> dict[str, Any]:
    return {
        streams.GAPS: 40,
        streams.GAP_P50: p50,
        streams.GAP_P95: max(p50, max_ms * 0.5),
        streams.GAP_MAX: max_ms,
        streams.GAP_MAX_AT: at_ms,
        streams.FIRST_TO_LAST: 40 * p50 + max_ms,
    }


def analyze(**per_layer: dict[str, Any]) -> ChainReport:
    """The recorded message trace with `per_layer` attributes on each layer's message span."""

    def with_stats(span: TraceSpan) -> TraceSpan:
        for layer, name in SPAN_OF.items():
            if span.name == name and layer in per_layer:
                return dataclasses.replace(span, attributes=span.attributes | per_layer[layer])
        return span

    return analyze_chain([with_stats(s) for s in message_spans()], lambda _: session_spans())


def test_the_attribute_keys_are_the_ones_the_layers_write() -> None:
    assert (
        streams.GAPS,
        streams.GAP_P50,
        streams.GAP_P95,
        streams.GAP_MAX,
        streams.GAP_MAX_AT,
        streams.FIRST_TO_LAST,
    ) == (
        Attr.STREAM_GAPS,
        Attr.STREAM_GAP_P50,
        Attr.STREAM_GAP_P95,
        Attr.STREAM_GAP_MAX,
        Attr.STREAM_GAP_MAX_AT,
        Attr.STREAM_FIRST_TO_LAST,
    )


def test_the_hop_that_held_the_tokens_is_named_with_what_it_added_and_when() -> None:
    report = analyze(
        client=stats(412.0, at_ms=2310.0),
        dashboard=stats(410.0, at_ms=2305.0),
        omni2=stats(12.0, at_ms=800.0),
    )
    assert not report.broken, report.problems
    assert set(report.streams) == {"client", "dashboard", "omni2"}
    assert report.streams["client"].public and not report.streams["dashboard"].public
    assert report.stall is not None
    assert (report.stall.layer, report.stall.below) == ("dashboard", "omni2")
    assert report.stall.added_ms == pytest.approx(398.0)
    assert report.stall.description == "the dashboard held tokens for 398 ms at 2.3 s"
    found = report.as_dict()
    assert found["stall"]["layer"] == "dashboard"
    assert found["streams"]["omni2"]["max_ms"] == 12.0
    assert found["stream_added_ms"] == pytest.approx({"client": 2.0, "dashboard": 398.0})
    assert json.loads(render_json([report]))["messages"][0]["stall"]["added_ms"] == 398.0
    table = render_table([report])
    assert table.splitlines()[0].split()[-2:] == ["stall", "status"]
    assert "d +398@2.3s" in table
    assert render_stalls([report]).endswith("the dashboard held tokens for 398 ms at 2.3 s")
    shown = render_streams(report.streams, list(report.layers), report.stall)
    assert "dashboard" in shown and "added +398.0" in shown and "(the client's word)" in shown
    assert shown.endswith("stall: the dashboard held tokens for 398 ms at 2.3 s")


def test_the_model_pace_and_an_even_stream_name_no_hop() -> None:
    # OMNI2 has no layer below: its own long gap (the model thinking) is no hop's stall.
    report = analyze(client=stats(905.0), dashboard=stats(903.0), omni2=stats(900.0))
    assert report.stall is None and len(report.streams) == 3
    assert "stall" in render_table([report]) and render_stalls([report]) == ""


@pytest.mark.parametrize(
    ("dashboard", "omni2", "stall_ms", "named"),
    [
        (45.0, 10.0, 50.0, False),  # added 35 ms: under the threshold
        (300.0, 200.0, 50.0, False),  # added 100 ms but 1.5x: a slow model's jitter
        (300.0, 120.0, 50.0, True),  # added 180 ms and 2.5x
        (45.0, 10.0, 20.0, True),  # a lower --stall-ms
    ],
)
def test_the_threshold(dashboard: float, omni2: float, stall_ms: float, named: bool) -> None:
    report = analyze(dashboard=stats(dashboard), omni2=stats(omni2))
    assert (report.judge_stall(stall_ms) is not None) is named


def test_a_client_never_names_a_hop_its_stats_are_its_word() -> None:
    report = analyze(client=stats(5000.0), dashboard=stats(11.0), omni2=stats(10.0))
    assert report.streams["client"].public
    assert report.stall is None


def test_the_largest_added_stall_wins() -> None:
    streams_ = {
        "client": LayerStream(9, 1, 2, 700, 10, 800),  # added 500 ms over the dashboard
        "dashboard": LayerStream(9, 1, 2, 200, 10, 800),  # added 190 ms over OMNI2
        "omni2": LayerStream(9, 1, 2, 10, 10, 800),
    }
    stall = judge_stall(streams_, ["client", "dashboard", "traefik", "omni2"])
    assert stall is not None and (stall.layer, stall.below) == ("client", "dashboard")
    # The same stats from the public path: the client's word names nobody.
    streams_["client"] = dataclasses.replace(streams_["client"], public=True)
    stall = judge_stall(streams_, ["client", "dashboard", "traefik", "omni2"])
    assert stall is not None and (stall.layer, stall.added_ms) == ("dashboard", 190)


@pytest.mark.parametrize(
    "bad",
    [
        {streams.GAP_MAX: "410"},
        {streams.GAP_MAX: float("nan")},
        {streams.GAP_MAX: -1.0},
        {streams.GAP_MAX: 1e12},
        {streams.GAP_MAX: True},
        {streams.GAPS: 0},
        {streams.GAPS: 2.5},
        {streams.GAP_P50: 500.0},  # p50 above the max: not a measurement
        {streams.FIRST_TO_LAST: 1.0},  # shorter than its longest gap
    ],
)
def test_malformed_stats_are_left_out(bad: dict[str, Any]) -> None:
    report = analyze(client=stats(410.0) | bad, dashboard=stats(12.0), omni2=stats(10.0))
    assert "client" not in report.streams and set(report.streams) == {"dashboard", "omni2"}
    assert report.stall is None


def test_a_trace_without_stats_has_none() -> None:
    report = analyze()
    assert report.streams == {} and report.stall is None
    assert report.as_dict()["stall"] is None and report.as_dict()["streams"] == {}
