"""The table of span names and attributes is complete, unique and published."""

from __future__ import annotations

from pathlib import Path

from otel.names import (
    ATTRIBUTES,
    SPANS,
    Attr,
    Service,
    SpanName,
    documented_span,
    telemetry_markdown,
)

DOC = Path(__file__).resolve().parents[2] / "docs" / "telemetry.md"


def test_docs_are_generated_from_the_table() -> None:
    assert DOC.read_text() == telemetry_markdown(), (
        "docs/telemetry.md is stale: run `omni-trace names --markdown > docs/telemetry.md`"
    )


def test_every_constant_is_in_the_table() -> None:
    for key in (v for k, v in vars(Attr).items() if k.isupper()):
        assert key in ATTRIBUTES
    for name in (v for k, v in vars(SpanName).items() if k.isupper()):
        assert name in SPANS
    assert all(doc.description for doc in [*SPANS.values(), *ATTRIBUTES.values()])


def test_documented_span_matches_patterns_per_service() -> None:
    assert documented_span(Service.OMNI2, SpanName.model_call("gpt-x")) is not None
    assert documented_span(Service.DASHBOARD, SpanName.TURN) is None  # wrong service
    assert documented_span(Service.AUTH, "GET /healthz") is not None
    assert documented_span(Service.OMNI2, "made up") is None
