from __future__ import annotations

import logging
import sys
import time

import pytest
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


# -- the broader list of secrets (otel/redaction.py's names, not only `token`) ------------------

SECRET = "s3cr3t-V4lue"
SECRET_PARAM_NAMES = [
    "apikey",
    "api-key",
    "API_KEY",
    "key",
    "secret",
    "client_secret",
    "sig",
    "signature",
    "X-Amz-Signature",
    "X-Amz-Credential",
    "X-Amz-Security-Token",
    "auth",
    "Authorization",
    "session",
    "sessionid",
    "passwd",
    "pwd",
    "credential",
    "credentials",
    "private_token",
    "refresh_token",
    "id_token",
    "github_token",  # a name ending in _token, -secret, .password, ...
    "db-password",
    "API%5FKEY",  # percent-encoded names
    "apik%65y",
    "x-amz-signatur%2565",  # twice
]


@pytest.mark.parametrize("name", SECRET_PARAM_NAMES)
def test_secret_names_are_masked_in_queries_urls_and_text(name: str) -> None:
    assert redact_query(f"{name}={SECRET}&x=1").endswith(f"={REDACTED}&x=1")
    url = redact_url(f"https://bucket.example/obj?{name}={SECRET}&x=1")
    assert SECRET not in url and "x=1" in url
    for text in (
        f"GET /hook?a=1&{name}={SECRET} HTTP/1.1",
        f"webhook failed: {name}={SECRET} (timeout)",
        f'config {name}="{SECRET}"',
        f"{{'{name}': '{SECRET}', 'user': 'bob'}}",
        f'{{"{name}": "{SECRET}"}}',
    ):
        out = redact_text(text)
        assert SECRET not in out and REDACTED in out, (text, out)
    assert "'user': 'bob'" in redact_text(f"{{'{name}': '{SECRET}', 'user': 'bob'}}")


def test_an_oauth_code_is_a_secret_in_a_query_but_a_close_code_is_not() -> None:
    assert SECRET not in redact_text(f"GET /callback?code={SECRET}&state=xyz HTTP/1.1")
    assert SECRET not in redact_text(f"GET /callback?state=xyz&code={SECRET}")
    assert SECRET not in redact_url(f"https://app/callback?code={SECRET}")
    assert redact_text("closed with code=1008 reason=flood") == "closed with code=1008 reason=flood"


def test_names_that_merely_resemble_secrets_are_kept() -> None:
    text = "max_tokens=5 token_count=3 monkey=1 keyboard=2 session_trace=abc"
    assert redact_text(text) == text


def test_url_userinfo_is_masked_in_urls_and_text() -> None:
    assert redact_url(f"https://hook:{SECRET}@ledger.internal/usage") == (
        f"https://hook:{REDACTED}@ledger.internal/usage"
    )
    text = f"cannot connect to postgresql+asyncpg://omni:{SECRET}@db:5432/omni2: refused"
    assert redact_text(text) == (
        f"cannot connect to postgresql+asyncpg://omni:{REDACTED}@db:5432/omni2: refused"
    )
    # A user part without a password is often a token itself (https://<token>@github.com).
    assert redact_text(f"clone https://{SECRET}@github.com/x.git") == (
        f"clone https://{REDACTED}@github.com/x.git"
    )
    # An @ in a path or query is no userinfo.
    assert redact_text("see http://host/a@b and mailto:bob@example.org") == (
        "see http://host/a@b and mailto:bob@example.org"
    )


def test_every_place_of_a_span_is_redacted_for_every_new_kind_of_secret() -> None:
    memory = InMemorySpanExporter()
    resource = Resource({"process.command_line": f"tool --api-key={SECRET}", "service.name": "t"})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(SimpleSpanProcessor(RedactingSpanExporter(memory)))
    tracer = provider.get_tracer("t")
    linked = SpanContext(1, 2, is_remote=True, trace_flags=TraceFlags(1))
    link = Link(linked, {"why": f"s3://bucket/o?X-Amz-Signature={SECRET}"})
    with tracer.start_as_current_span(f"POST /hook?apikey={SECRET}", links=[link]) as span:
        span.set_attribute("url.full", f"https://u:{SECRET}@ledger/usage?apikey={SECRET}")
        span.set_attribute("http.url", f"https://ledger/usage?sig={SECRET}")
        span.set_attribute("url.query", f"key={SECRET}")
        span.set_attribute("db.url", f"postgresql://omni:{SECRET}@db/omni2")
        span.set_attribute("several", ["ok", f"session={SECRET}"])
        span.add_event(f"retry ?apikey={SECRET}", {"detail": f"{{'client_secret': '{SECRET}'}}"})
        span.set_status(Status(StatusCode.ERROR, f"failed: https://ledger?signature={SECRET}"))
    (exported,) = memory.get_finished_spans()
    dump = exported.to_json()
    assert SECRET not in dump, dump
    assert exported.attributes is not None
    assert exported.attributes["url.full"] == (
        f"https://u:{REDACTED}@ledger/usage?apikey={REDACTED}"
    )


def test_log_records_and_tracebacks_mask_every_new_kind_of_secret() -> None:
    try:
        raise ConnectionError(f"cannot reach https://hook:{SECRET}@ledger?X-Amz-Signature={SECRET}")
    except ConnectionError:
        record = logging.LogRecord(
            "x", logging.ERROR, "f", 1, "webhook %s failed", (f"?apikey={SECRET}",), sys.exc_info()
        )
    record.stack_info = f"Stack (most recent call last):\n  session={SECRET}"
    assert RedactingLogFilter().filter(record)
    text = logging.Formatter().format(record)
    assert "ConnectionError" in text and "webhook" in text
    assert SECRET not in text, text


def test_credential_headers_written_out_are_masked() -> None:
    text = (
        f"request headers: Authorization: Basic {SECRET}\n"
        f"X-Api-Key: {SECRET}, Accept: */*\nProxy-Authorization: Digest {SECRET}"
    )
    out = redact_text(text)
    assert SECRET not in out, out
    assert "Authorization: Basic REDACTED" in out and "Accept: */*" in out
    assert redact_text(f"Authorization: Bearer {JWT}") == f"Authorization: Bearer {REDACTED}"


def test_long_runs_of_name_characters_take_linear_time() -> None:
    """Tried at every character of a long run, the patterns cost quadratic time (64 KiB of
    letters took seconds): the redactor runs on every span and log line."""
    for text in ("a" * 65536 + " =", "a." * 32768 + " ://x@y", "a" * 65536 + " Authorization:"):
        started = time.perf_counter()
        redact_text(text)
        assert time.perf_counter() - started < 0.5, text[:20]
