"""Keep secrets out of spans and logs.

Every exported span passes through `RedactingSpanExporter`, and every log record through
`RedactingLogFilter`, so a token that slips into a URL or a message is caught in one place.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.util.types import Attributes

REDACTED = "REDACTED"

# Query parameters whose values are secrets.
SECRET_QUERY_PARAMS = frozenset({"token", "access_token", "jwt", "password", "api_key"})
# Span attributes that hold URLs or query strings.
URL_ATTRIBUTES = frozenset({"url.query", "url.full", "http.url", "http.target", "url.original"})

# query-string style: token=...
_SECRET_PARAM = re.compile(r"(?i)\b(token|access_token|jwt|password|api_key)=[^&\s\"'<>]+")
# Authorization header values
_BEARER = re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=-]+")
# A JWT anywhere: three base64url parts, the first starting with '{"' encoded.
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")


def redact_text(text: str) -> str:
    """Mask token-like values in free text (log lines, error messages)."""
    text = _SECRET_PARAM.sub(rf"\1={REDACTED}", text)
    text = _BEARER.sub(rf"\1 {REDACTED}", text)
    return _JWT.sub(REDACTED, text)


def redact_query(query: str) -> str:
    """Mask the values of secret parameters in a query string."""
    pairs = parse_qsl(query, keep_blank_values=True)
    return urlencode([(k, REDACTED if k.lower() in SECRET_QUERY_PARAMS else v) for k, v in pairs])


def redact_url(url: str) -> str:
    """Mask secret query values (and userinfo) in a URL."""
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit((parts.scheme, netloc, parts.path, redact_query(parts.query), ""))


def redact_attributes(attributes: Attributes) -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in (attributes or {}).items():
        if isinstance(value, str):
            if key in URL_ATTRIBUTES:
                value = redact_query(value) if key == "url.query" else redact_url(value)
            value = redact_text(value)
        out[key] = value
    return out


def redact_span(span: ReadableSpan) -> ReadableSpan:
    """A copy of `span` with secrets masked in its attributes, events and status."""
    events = [
        Event(event.name, redact_attributes(event.attributes), event.timestamp)  # type: ignore[arg-type]
        for event in span.events
    ]
    status = span.status
    if status.description:
        status = type(status)(status.status_code, redact_text(status.description))
    return ReadableSpan(
        name=span.name,
        context=span.context,
        parent=span.parent,
        resource=span.resource,
        attributes=redact_attributes(span.attributes),  # type: ignore[arg-type]
        events=events,
        links=span.links,
        kind=span.kind,
        status=status,
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )


class RedactingSpanExporter(SpanExporter):
    """Wraps an exporter and masks secrets in every span before it leaves the process."""

    def __init__(self, inner: SpanExporter) -> None:
        self._inner = inner

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return self._inner.export([redact_span(s) for s in spans])

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._inner.force_flush(timeout_millis)


class RedactingLogFilter(logging.Filter):
    """Rewrites each record's message with secrets masked (attach it to handlers)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact_text(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True
