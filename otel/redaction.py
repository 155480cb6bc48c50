"""Keep secrets out of spans and logs.

Every exported span passes through `RedactingSpanExporter`, and every log record through
`RedactingLogFilter`, so a token that slips into a URL or a message is caught in one place.
"""

from __future__ import annotations

import logging
import re
import traceback
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import Link
from opentelemetry.util.types import Attributes

REDACTED = "REDACTED"

# Query parameters whose values are secrets.
SECRET_QUERY_PARAMS = frozenset({"token", "access_token", "jwt", "password", "api_key"})
# Span attributes that hold URLs or query strings.
URL_ATTRIBUTES = frozenset({"url.query", "url.full", "http.url", "http.target", "url.original"})

# query-string style: token=..., also with a percent-encoded name (tok%65n=...)
_PARAM = re.compile(r"([\w.~%-]+)=([^&\s\"'<>]+)")
# Authorization header values
_BEARER = re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=-]+")
# A JWT anywhere: three base64url parts, the first starting with '{"' encoded.
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")


def is_secret_param(name: str) -> bool:
    """A query parameter whose value is a secret, whatever its case or percent-encoding."""
    return unquote(unquote(name)).strip().lower() in SECRET_QUERY_PARAMS


def _mask_param(match: re.Match[str]) -> str:
    return f"{match.group(1)}={REDACTED}" if is_secret_param(match.group(1)) else match.group(0)


# What each pattern above needs to match at all: one search rules out most strings (the
# attributes of nearly every span) without running the three substitutions.
_SUSPECT = re.compile(r"=|(?i:bearer)|eyJ")


def redact_text(text: str) -> str:
    """Mask token-like values in free text (log lines, error messages, tracebacks)."""
    if _SUSPECT.search(text) is None:
        return text
    if "=" in text:
        text = _PARAM.sub(_mask_param, text)
    text = _BEARER.sub(rf"\1 {REDACTED}", text)
    return _JWT.sub(REDACTED, text)


def redact_query(query: str) -> str:
    """Mask the values of secret parameters in a query string."""
    pairs = parse_qsl(query, keep_blank_values=True)
    return urlencode([(k, REDACTED if is_secret_param(k) else v) for k, v in pairs])


def redact_url(url: str) -> str:
    """Mask secret query values (and userinfo) in a URL."""
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit((parts.scheme, netloc, parts.path, redact_query(parts.query), ""))


def _redact_value(key: str, value: object) -> object:
    if isinstance(value, str):
        if key in URL_ATTRIBUTES:
            value = redact_query(value) if key == "url.query" else redact_url(value)
        return redact_text(value)
    if isinstance(value, tuple | list) and any(isinstance(v, str) for v in value):
        return tuple(redact_text(v) if isinstance(v, str) else v for v in value)
    return value


def redact_attributes(attributes: Attributes) -> Attributes:
    """Attributes with secrets masked in string values and string lists; the same mapping
    when there was nothing to mask (most spans), so clean spans are not copied."""
    if not attributes:
        return attributes
    changed: dict[str, Any] = {}
    for key, value in attributes.items():
        cleaned = _redact_value(key, value)
        if cleaned != value:
            changed[key] = cleaned
    return {**attributes, **changed} if changed else attributes


class _ResourceCache:
    """Resources are shared by every span of a provider: redact each one once."""

    def __init__(self) -> None:
        self._resource: Resource | None = None
        self._redacted: Resource | None = None

    def redacted(self, resource: Resource) -> Resource:
        if resource is not self._resource:
            attributes = redact_attributes(resource.attributes)
            cleaned = (
                resource
                if attributes is resource.attributes
                else Resource(attributes, resource.schema_url)  # type: ignore[arg-type]
            )
            self._resource, self._redacted = resource, cleaned
        assert self._redacted is not None
        return self._redacted


_RESOURCES = _ResourceCache()


def redact_span(span: ReadableSpan) -> ReadableSpan:
    """`span` with secrets masked in its attributes, events, links, resource and status: a
    copy when anything had to be masked, else the span itself (the profile under load showed
    a copy of every span as a share of export's cost)."""
    # Each property returns a new view: read each once, and compare with what was read.
    original_attributes, original_events, original_links = span.attributes, span.events, span.links
    attributes = redact_attributes(original_attributes)
    events = [
        Event(event.name, cleaned, event.timestamp)
        if (cleaned := redact_attributes(event.attributes)) is not event.attributes
        else event
        for event in original_events
    ]
    links = [
        Link(link.context, cleaned)
        if (cleaned := redact_attributes(link.attributes)) is not link.attributes
        else link
        for link in original_links
    ]
    resource = _RESOURCES.redacted(span.resource)
    status = span.status
    if status.description and (text := redact_text(status.description)) != status.description:
        status = type(status)(status.status_code, text)
    unchanged = (
        attributes is original_attributes
        and resource is span.resource
        and status is span.status
        and all(new is old for new, old in zip(events, original_events, strict=True))
        and all(new is old for new, old in zip(links, original_links, strict=True))
    )
    if unchanged:
        return span
    return ReadableSpan(
        name=span.name,
        context=span.context,
        parent=span.parent,
        resource=resource,
        attributes=attributes,
        events=events,
        links=links,
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
    """Rewrites each record's message, traceback and stack with secrets masked (attach it to
    handlers): an exception's text can hold a URL with a token as easily as a message can."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact_text(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            # Formatters print exc_text when it is set, so the raw traceback never is.
            record.exc_text = redact_text(
                "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
            )
        elif record.exc_text:
            record.exc_text = redact_text(record.exc_text)
        if record.stack_info:
            record.stack_info = redact_text(record.stack_info)
        return True
