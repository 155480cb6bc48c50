from __future__ import annotations

import logging
import sys

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanContext, Status, StatusCode, TraceFlags

from otel.redaction import (
    REDACTED,
    RedactingLogFilter,
    RedactingSpanExporter,
    redact_query,
    redact_span,
    redact_text,
    redact_url,
)

JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl"


def test_redact_url_masks_token_and_keeps_other_params() -> None:
    url = f"ws://host:8091/ws/chat?token={JWT}&traceparent=00-abc"
    out = redact_url(url)
    assert JWT not in out
    assert f"token={REDACTED}" in out
    assert "traceparent=00-abc" in out


def test_redact_url_drops_userinfo() -> None:
    assert "secret" not in redact_url("http://user:secret@host/path")


def test_redact_query_is_case_insensitive_on_names() -> None:
    assert redact_query("Token=abc&x=1") == f"Token={REDACTED}&x=1"


def test_redact_text_masks_bearer_query_and_bare_jwt() -> None:
    text = f"Authorization: Bearer {JWT} GET /ws/chat?token=abc.def 1 {JWT}"
    out = redact_text(text)
    assert JWT not in out
    assert "abc.def" not in out
    assert f"Bearer {REDACTED}" in out


def test_exporter_redacts_attributes_events_and_status() -> None:
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(RedactingSpanExporter(memory)))
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("s") as span:
        span.set_attribute("url.full", f"ws://h/ws/chat?token={JWT}")
        span.set_attribute("url.query", f"token={JWT}&a=b")
        span.set_attribute("note", f"saw {JWT}")
        span.add_event("e", {"detail": f"Bearer {JWT}"})
        span.set_status(Status(StatusCode.ERROR, f"bad token {JWT}"))
    (exported,) = memory.get_finished_spans()
    dump = exported.to_json()
    assert JWT not in dump
    assert exported.attributes is not None
    assert exported.attributes["url.query"] == f"token={REDACTED}&a=b"


def test_log_filter_rewrites_message_with_args() -> None:
    record = logging.LogRecord("x", logging.INFO, "f", 1, "GET %s", (f"/ws?token={JWT}",), None)
    assert RedactingLogFilter().filter(record)
    assert JWT not in record.getMessage()


def test_percent_encoded_and_upper_case_names_are_secret_too() -> None:
    for name in ("tok%65n", "TOKEN", "%74oken", "tok%2565n"):
        assert redact_query(f"{name}=abc&x=1").endswith("=REDACTED&x=1"), name
        assert "abc" not in redact_text(f"GET /ws/chat?{name}=abc HTTP/1.1"), name


def test_lists_links_and_resources_are_redacted() -> None:
    memory = InMemorySpanExporter()
    resource = Resource({"process.command_line": f"tool --token={JWT}", "service.name": "t"})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(SimpleSpanProcessor(RedactingSpanExporter(memory)))
    tracer = provider.get_tracer("t")
    linked = SpanContext(1, 2, is_remote=True, trace_flags=TraceFlags(1))
    with tracer.start_as_current_span("s", links=[Link(linked, {"why": f"Bearer {JWT}"})]) as span:
        span.set_attribute("several", ["ok", f"token={JWT}", JWT])
    (exported,) = memory.get_finished_spans()
    assert JWT not in exported.to_json()
    assert exported.attributes is not None and exported.attributes["several"][0] == "ok"
    assert exported.resource.attributes["service.name"] == "t"


def test_log_filter_redacts_tracebacks() -> None:
    try:
        raise ValueError(f"cannot open ws://h/ws/chat?token={JWT}")
    except ValueError:
        record = logging.LogRecord("x", logging.ERROR, "f", 1, "failed", (), sys.exc_info())
    assert RedactingLogFilter().filter(record)
    text = logging.Formatter().format(record)
    assert "ValueError" in text
    assert JWT not in text


def test_clean_spans_are_exported_as_they_are_and_dirty_ones_copied() -> None:
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("clean", attributes={"n": 1, "s": "hello"}) as span:
        span.add_event("e", {"k": "v"})
    with tracer.start_as_current_span("dirty", attributes={"s": f"token={JWT}"}):
        pass
    clean, dirty = memory.get_finished_spans()
    assert redact_span(clean) is clean
    assert redact_span(dirty) is not dirty
    assert JWT not in redact_span(dirty).to_json()
